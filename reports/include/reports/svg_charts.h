// More inline SVG charts drawn by deepfit (no scripts, no fonts fetched, open offline): roofline,
// sorted horizontal bars, stacked bars with capacity, predicted-vs-measured scatter. They take
// plain structs, not planner types; turning results into these structs is the caller's job.
//
// Shared contract: every chart has a title, axis labels with units, ticks, and a legend where
// there is more than one series. A chart with nothing to draw is an SVG that says
// "no data: <reason>" (the caller's no_data_reason, or a default). A non-finite value is a bug
// (DEEPFIT_ASSERT), never drawn. Output is deterministic (fixed number formats), so golden tests work.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace deepfit::reports {

// Scale of a value axis. kAuto: log10 when every value is > 0 and max/min >= 100 (two decades),
// linear otherwise. kLog with a value <= 0 is a bug (DEEPFIT_ASSERT).
enum class AxisScale { kAuto, kLinear, kLog };

// Roofline, log-log: x = arithmetic intensity (FLOP/byte), y = compute rate. One diagonal
// bandwidth roof, one horizontal compute roof per dtype starting at its ridge point
// (peak / bandwidth, marked and labelled), and the measured points as markers with a legend.
// Roofs with equal peaks share one label ("bf16, fp16 989 TFLOP/s") and one ridge marker. The
// axes cover roofs and points, with two decades of slope below the lowest ridge. The y unit is
// GFLOP/s, or TFLOP/s when the largest value reaches 1e5 GFLOP/s. Every number must be > 0
// (a zero peak or rate is a sentinel, so it is rejected with DEEPFIT_ASSERT, not skipped).
struct ComputeRoof {
  std::string label;   // dtype, e.g. "bf16"; drawn as "bf16 459 GFLOP/s"
  double peak_gflops;  // > 0
};
struct RooflinePoint {
  std::string label;               // e.g. "attention decode"
  double intensity_flop_per_byte;  // > 0
  double achieved_gflops;          // > 0
};
struct RooflineChart {
  std::string title;
  std::string bandwidth_label = "memory";  // drawn as "memory 3350 GB/s"
  std::optional<double> bandwidth_gbps;    // > 0; without it (or without roofs) there is no chart
  std::vector<ComputeRoof> roofs;
  std::vector<RooflinePoint> points;
  std::string no_data_reason;  // default: "no bandwidth or compute roof given"
  int width = 720, height = 420;
};
std::string svg_roofline(const RooflineChart& c);

// Horizontal bars sorted ascending by value (cheapest first, ties keep the given order), each
// with its value and unit at the bar end. Values must be >= 0 (DEEPFIT_ASSERT); a zero value
// makes kAuto choose a linear axis. The height follows from the number of bars.
struct Bar {
  std::string label;
  double value;
};
struct BarChart {
  std::string title;
  std::string value_label;     // what is measured, e.g. "cost per million output tokens"
  std::string unit;            // e.g. "USD"; axis label reads "<value_label> (<unit>)"
  std::string category_label;  // optional, e.g. "configuration"
  AxisScale scale = AxisScale::kAuto;
  std::vector<Bar> bars;
  std::string no_data_reason;  // default: "no bars"
  int width = 720;
};
std::string svg_bar_chart(const BarChart& c);

// Horizontal stacked bars in the given order, one per category (e.g. per quantization), one
// segment per segment_labels entry (e.g. weights, KV cache, activations, reserve) with a legend,
// on a linear axis from 0. Capacity is one dashed line over all bars, or a marker per bar (a
// bar's own capacity wins). The bar-end label is the total, plus "exceeds capacity" when it does.
// Segment values are >= 0 (DEEPFIT_ASSERT); zero segments are not drawn.
struct StackedBar {
  std::string label;
  std::vector<double> segments;    // one per StackedBarChart::segment_labels, in `unit`
  std::optional<double> capacity;  // this bar's capacity, in `unit`
};
struct StackedBarChart {
  std::string title;
  std::string value_label;  // e.g. "memory per device"
  std::string unit;         // e.g. "GB"
  std::string category_label;
  std::vector<std::string> segment_labels;
  std::vector<StackedBar> bars;
  std::optional<double> capacity;  // one line for all bars, in `unit`
  std::string capacity_label = "capacity";
  std::string no_data_reason;  // default: "no bars"
  int width = 720;
};
std::string svg_stacked_bar_chart(const StackedBarChart& c);

// Predicted (y) against measured (x), both axes on the same scale and range, with the y = x line,
// an optional shaded band y = x * (1 +/- e), and points grouped into series with a legend.
// kAuto picks log-log from all measured and predicted values together. Values must be >= 0
// (DEEPFIT_ASSERT; times, rates and sizes are), and a zero makes kAuto choose linear axes. On a
// log axis with e >= 1 the band's lower edge is the bottom of the plot (x * (1 - e) <= 0 cannot
// be drawn there).
struct ScatterPoint {
  double measured, predicted;
  std::string label;  // shown as the point's tooltip, e.g. the scenario id
};
struct ScatterSeries {
  std::string label;  // e.g. metric or framework
  std::vector<ScatterPoint> points;
};
struct ScatterChart {
  std::string title;
  std::string quantity;  // axis labels read "measured <quantity> (<unit>)", "predicted ..."
  std::string unit;
  AxisScale scale = AxisScale::kAuto;
  std::optional<double> error_fraction;  // e > 0, e.g. 0.18 for an 18% median error
  std::string error_label;               // legend text of the band; default "y = x ± 18.0%"
  std::vector<ScatterSeries> series;
  std::string no_data_reason;  // default: "no points"
  int width = 720, height = 460;
};
std::string svg_scatter_chart(const ScatterChart& c);

}  // namespace deepfit::reports
