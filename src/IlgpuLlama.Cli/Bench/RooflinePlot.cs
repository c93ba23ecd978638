using ScottPlot;

namespace IlgpuLlama.Cli.Bench;

/// <summary>
/// A roofline chart of a kernel benchmark: x = arithmetic intensity (FLOP/byte), y = GFLOP/s, both
/// log10 (ScottPlot 5 plots the logarithms with log-labelled ticks), the bandwidth roof from the
/// measured copy bandwidth, the fp32 compute roof when the device's spec is known, and one
/// labelled point per kernel/shape that does floating-point work.
/// </summary>
public static class RooflinePlot
{
    /// <summary>Writes the PNG; returns the number of points plotted.</summary>
    public static int Save(KernelBenchReport report, string path, int width = 1600, int height = 1000)
    {
        var points = report.Rows.Where(r => r is { Skipped: false, GflopPerS: > 0 } && r.ArithmeticIntensity is > 0).ToList();
        var plot = new Plot();
        plot.Title($"Roofline: {report.Device} ({report.Shapes}, {report.Storage})");
        plot.XLabel("arithmetic intensity (FLOP/byte, log scale)");
        plot.YLabel("GFLOP/s (log scale)");

        double minAi = points.Count > 0 ? points.Min(p => p.ArithmeticIntensity!.Value) : 0.1;
        double maxAi = points.Count > 0 ? points.Max(p => p.ArithmeticIntensity!.Value) : 100;
        double x0 = Math.Floor(Math.Log10(minAi)) - 0.5;
        double x1 = Math.Ceiling(Math.Log10(maxAi)) + 0.5;
        double bw = report.CopyBandwidth.GbPerS;
        double? peak = report.SpecFp32GflopPerS;
        if (peak is double p0)
            x1 = Math.Max(x1, Math.Log10(p0 / bw) + 0.5);

        // Bandwidth roof: GFLOP/s = AI * GB/s, capped by the compute roof when known.
        var roofX = new List<double>();
        var roofY = new List<double>();
        for (double x = x0; x <= x1 + 1e-9; x += 0.05)
        {
            double gflops = Math.Pow(10, x) * bw;
            if (peak is double p)
                gflops = Math.Min(gflops, p);
            roofX.Add(x);
            roofY.Add(Math.Log10(gflops));
        }
        var roof = plot.Add.Scatter(roofX.ToArray(), roofY.ToArray());
        roof.MarkerSize = 0;
        roof.LineWidth = 2;
        roof.Color = Colors.Black;
        roof.LegendText = peak is double pk
            ? $"roof: measured copy {bw:F0} GB/s, fp32 peak {pk / 1000:F1} TFLOP/s ({report.SpecName})"
            : $"roof: measured copy {bw:F0} GB/s (compute peak unknown)";

        var palette = new ScottPlot.Palettes.Category10();
        var families = points.Select(r => r.Family).Distinct().ToList();
        foreach (var family in families)
        {
            var rows = points.Where(r => r.Family == family).ToList();
            var color = palette.GetColor(families.IndexOf(family));
            var scatter = plot.Add.Scatter(
                rows.Select(r => Math.Log10(r.ArithmeticIntensity!.Value)).ToArray(),
                rows.Select(r => Math.Log10(r.GflopPerS!.Value)).ToArray());
            scatter.LineWidth = 0;
            scatter.MarkerSize = 9;
            scatter.Color = color;
            scatter.LegendText = family;
            foreach (var r in rows)
            {
                var text = plot.Add.Text($"{r.Kernel} {r.Shape} b{r.Batch}", Math.Log10(r.ArithmeticIntensity!.Value), Math.Log10(r.GflopPerS!.Value));
                text.LabelFontSize = 10;
                text.LabelFontColor = color;
                text.LabelOffsetX = 6;
                text.LabelOffsetY = -6;
            }
        }

        double yMin = points.Count > 0 ? Math.Floor(points.Min(r => Math.Log10(r.GflopPerS!.Value))) - 0.5 : -1;
        double yMax = Math.Max(roofY.Max(), points.Count > 0 ? points.Max(r => Math.Log10(r.GflopPerS!.Value)) : 0) + 0.5;
        plot.Axes.SetLimits(x0, x1, yMin, yMax);
        plot.Axes.Bottom.TickGenerator = LogTicks();
        plot.Axes.Left.TickGenerator = LogTicks();
        plot.ShowLegend(Alignment.LowerRight);
        IlgpuLlama.IO.OutputFile.WriteAllBytes(path, plot.GetImageBytes(width, height, ImageFormat.Png));
        return points.Count;
    }

    static ScottPlot.TickGenerators.NumericAutomatic LogTicks() => new()
    {
        MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
        IntegerTicksOnly = true,
        LabelFormatter = v => Math.Pow(10, v) is var p && p >= 1
            ? p.ToString("#,0", System.Globalization.CultureInfo.InvariantCulture)
            : p.ToString("0.####", System.Globalization.CultureInfo.InvariantCulture),
    };
}
