# Installs the library, its headers and a CMake package so that consumers can
# find_package(spatialsoftmax) and link spatialsoftmax::spatialsoftmax (the
# math) and spatialsoftmax::operators (the Caffe2-style operator layer).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS spatialsoftmax spatialsoftmax_ops EXPORT spatialsoftmaxTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/spatialsoftmax DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET spatialsoftmax_cli)
  install(TARGETS spatialsoftmax_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

set(config_dir ${CMAKE_INSTALL_LIBDIR}/cmake/spatialsoftmax)
install(EXPORT spatialsoftmaxTargets NAMESPACE spatialsoftmax:: DESTINATION ${config_dir})
configure_package_config_file(cmake/spatialsoftmaxConfig.cmake.in
  ${PROJECT_BINARY_DIR}/spatialsoftmaxConfig.cmake INSTALL_DESTINATION ${config_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/spatialsoftmaxConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/spatialsoftmaxConfig.cmake
  ${PROJECT_BINARY_DIR}/spatialsoftmaxConfigVersion.cmake DESTINATION ${config_dir})
