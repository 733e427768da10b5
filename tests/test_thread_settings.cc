// Thread settings with an invalid SPATIALSOFTMAX_NUM_THREADS in the
// environment (issue 10, item 11): CTest runs this program with the variable
// set to 99999999. The call overrides the variable, as threads.h says;
// before, every call threw forever.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "spatialsoftmax/spatialsoftmax.h"
#include "spatialsoftmax/threads.h"
#include "test_support.h"

namespace spatialsoftmax::testing {
namespace {

TEST(ThreadSettings, SetOverridesAnInvalidVariableAndCountsAreCapped) {
  ASSERT_STREQ(std::getenv("SPATIALSOFTMAX_NUM_THREADS"), "99999999");
  EXPECT_ERROR_MENTIONS(num_threads(), {"SPATIALSOFTMAX_NUM_THREADS", "99999999", "[1, 256]"});
  EXPECT_ERROR_MENTIONS(num_threads(), {"SPATIALSOFTMAX_NUM_THREADS"});  // still, not cached
  EXPECT_ERROR_MENTIONS(set_num_threads(0), {"set_num_threads", "[1, 256]"});
  EXPECT_ERROR_MENTIONS(set_num_threads(kMaxThreads + 1), {"set_num_threads", "257"});
  set_num_threads(3);
  EXPECT_EQ(num_threads(), 3);
  const Tensor x = random_uniform(DType::kFloat32, {2, 5, 7}, -2, 2, 1);
  EXPECT_EQ(softmax(x).shape(), (Shape{2, 5, 7}));
  set_num_threads(kMaxThreads);
  EXPECT_EQ(num_threads(), kMaxThreads);
}

}  // namespace
}  // namespace spatialsoftmax::testing
