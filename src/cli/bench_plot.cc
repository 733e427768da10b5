// `spatialsoftmax bench --plot FILE.svg`: the run as a chart, one panel per
// op, one group of bars per shape, layout and thread count, one bar per
// implementation (ours first, then the peers), as % of the same run's
// memcpy bandwidth at that thread count. Written by hand as SVG (no
// plotting dependency) through a StagedFile, so the file appears complete
// or not at all.
#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cli/bench_common.h"
#include "io/staged_file.h"

namespace spatialsoftmax::cli::bench {
namespace {

// A colour per implementation: ours the darkest, the peers in a fixed order.
std::string colour_of(const std::string& impl, const std::vector<std::string>& impls) {
  static const char* const palette[] = {"#1f4e79", "#c55a11", "#548235", "#7f6000",
                                        "#7030a0", "#2e75b6", "#a5a5a5", "#bf9000"};
  const auto it = std::find(impls.begin(), impls.end(), impl);
  const auto i = static_cast<std::size_t>(it - impls.begin());
  return palette[i % std::size(palette)];
}

std::string escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

struct Group {
  std::string label;                  // "2x19x512x1024 NCHW 2 thr"
  std::map<std::string, double> pct;  // impl -> % of memcpy
};

}  // namespace

void write_plot(const std::string& path, const std::vector<json>& ours,
                const std::vector<json>& peers, const std::string& title) {
  std::vector<std::string> impls = {"spatialsoftmax"};
  for (const json& p : peers) {
    const std::string impl = p["impl"].get<std::string>();
    if (std::find(impls.begin(), impls.end(), impl) == impls.end()) impls.push_back(impl);
  }
  // Panels by op, groups in our rows' order.
  std::vector<std::string> ops;
  std::map<std::string, std::vector<Group>> groups;
  std::map<std::string, std::size_t> group_of;  // row_key -> index in its op's groups
  for (const json& r : ours) {
    const std::string op = r["op"].get<std::string>();
    if (std::find(ops.begin(), ops.end(), op) == ops.end()) ops.push_back(op);
    Group g;
    const int threads = r["threads"].get<int>();
    const std::string dtype = row_dtype(r);
    g.label = shape_text(r["shape"].get<Shape>()) + " " + r["layout"].get<std::string>() +
              (dtype == "float32" ? "" : " " + dtype) +
              (threads > 0 ? " " + std::to_string(threads) + " thr" : " GPU");
    group_of[row_key(r)] = groups[op].size();
    groups[op].push_back(std::move(g));
  }
  for (const std::vector<json>* rows : {&ours, &peers}) {
    for (const json& r : *rows) {
      const auto it = group_of.find(row_key(r));
      if (it == group_of.end() || !r.contains("pct_memcpy")) continue;
      groups[r["op"].get<std::string>()][it->second].pct[r["impl"].get<std::string>()] =
          r["pct_memcpy"].get<double>();
    }
  }
  double top = 100;
  for (const auto& [op, gs] : groups)
    for (const Group& g : gs)
      for (const auto& [impl, pct] : g.pct) top = std::max(top, pct);
  top = std::ceil(top / 25) * 25;

  // Layout: a label column, then bars from 0 to `top` percent.
  constexpr int kBars = 420, kBar = 9, kGap = 8, kPanelGap = 40, kMargin = 20;
  std::size_t longest_label = 0;
  for (const auto& [op, gs] : groups)
    for (const Group& g : gs) longest_label = std::max(longest_label, g.label.size());
  // About 6.5 px a character at font-size 11, so that no label runs into its bars.
  const int label_width =
      std::max(190, 12 + static_cast<int>(6.5 * static_cast<double>(longest_label)));
  const int bar_rows = static_cast<int>(impls.size());
  const int group_height = bar_rows * kBar + kGap;
  const int panel_width = label_width + kBars + kMargin;
  std::size_t most_groups = 0;
  for (const auto& [op, gs] : groups) most_groups = std::max(most_groups, gs.size());
  const int legend = 22;
  const int height = 60 + legend + static_cast<int>(most_groups) * group_height + 30;
  const int width = kMargin + static_cast<int>(ops.size()) * (panel_width + kPanelGap);
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kMargin << "\" y=\"20\" font-size=\"14\">" << escape(title) << "</text>\n";
  int x_legend = kMargin;
  for (const std::string& impl : impls) {
    svg << "<rect x=\"" << x_legend << "\" y=\"32\" width=\"10\" height=\"10\" fill=\""
        << colour_of(impl, impls) << "\"/><text x=\"" << x_legend + 14 << "\" y=\"41\">"
        << escape(impl) << "</text>\n";
    x_legend += 24 + 7 * static_cast<int>(impl.size());
  }
  for (std::size_t panel = 0; panel < ops.size(); ++panel) {
    const std::string& op = ops[panel];
    const int x0 = kMargin + static_cast<int>(panel) * (panel_width + kPanelGap);
    const int y0 = 60 + legend;
    svg << "<text x=\"" << x0 << "\" y=\"" << y0 - 8 << "\" font-size=\"12\">" << escape(op)
        << ": % of memcpy</text>\n";
    for (int tick = 0; tick <= static_cast<int>(top); tick += 25) {
      const double x = x0 + label_width + kBars * tick / top;
      svg << "<line x1=\"" << x << "\" y1=\"" << y0 << "\" x2=\"" << x << "\" y2=\""
          << y0 + static_cast<int>(groups[op].size()) * group_height << "\" stroke=\""
          << (tick == 100 ? "#000" : "#ddd") << "\"/><text x=\"" << x - 8 << "\" y=\""
          << y0 + static_cast<int>(groups[op].size()) * group_height + 14 << "\">" << tick
          << "</text>\n";
    }
    for (std::size_t gi = 0; gi < groups[op].size(); ++gi) {
      const Group& g = groups[op][gi];
      const int gy = y0 + static_cast<int>(gi) * group_height;
      svg << "<text x=\"" << x0 << "\" y=\"" << gy + bar_rows * kBar / 2 + 4 << "\">"
          << escape(g.label) << "</text>\n";
      for (std::size_t b = 0; b < impls.size(); ++b) {
        const auto it = g.pct.find(impls[b]);
        if (it == g.pct.end()) continue;
        const double w = kBars * std::min(it->second, top) / top;
        svg << "<rect x=\"" << x0 + label_width << "\" y=\"" << gy + static_cast<int>(b) * kBar
            << "\" width=\"" << fixed(w, 1) << "\" height=\"" << kBar - 1 << "\" fill=\""
            << colour_of(impls[b], impls) << "\"><title>" << escape(impls[b]) << " "
            << escape(g.label) << ": " << fixed(it->second, 1) << "% of memcpy</title></rect>\n";
      }
    }
  }
  svg << "</svg>\n";
  io::StagedFile file(path);
  file.write(svg.str());
  file.commit();
}

}  // namespace spatialsoftmax::cli::bench
