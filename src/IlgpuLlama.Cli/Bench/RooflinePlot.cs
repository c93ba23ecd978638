using System.Reflection;
using ScottPlot;

namespace IlgpuLlama.Cli.Bench;

/// <summary>An axis-aligned box in image pixels (y down).</summary>
public readonly record struct LabelBox(double Left, double Top, double Width, double Height)
{
    /// <summary>Right edge.</summary>
    public double Right => Left + Width;

    /// <summary>Bottom edge.</summary>
    public double Bottom => Top + Height;

    /// <summary>True when the two boxes share any area (touching edges do not count).</summary>
    public bool Intersects(LabelBox o) => Left < o.Right && o.Left < Right && Top < o.Bottom && o.Top < Bottom;

    /// <summary>True when this box lies inside <paramref name="o"/>.</summary>
    public bool Inside(LabelBox o) => Left >= o.Left && Right <= o.Right && Top >= o.Top && Bottom <= o.Bottom;

    /// <summary>This box grown by <paramref name="m"/> on every side.</summary>
    public LabelBox Grow(double m) => new(Left - m, Top - m, Width + 2 * m, Height + 2 * m);
}

/// <summary>Where one point's label went: its text, the point and the label's box in pixels, and whether a leader line joins them.</summary>
public sealed record PlacedLabel(string Text, double PointX, double PointY, LabelBox Box, bool Leader);

/// <summary>
/// Greedy label placement without overlaps (the classic cartographic approach): each label tries
/// positions around its point on rings of growing radius, nearest first, and takes the first
/// that stays inside the area and touches no placed label, no point marker and no reserved box
/// (the legend). A label set away from its point gets a leader line. Labels are placed in order
/// of how crowded their point is, most crowded first, so isolated points keep labels beside them.
/// </summary>
public static class LabelLayout
{
    const int Directions = 16;
    const double Gap = 2;

    /// <summary>
    /// Boxes for labels of the given sizes at the given points (null where no free position
    /// exists anywhere in <paramref name="area"/>); no two boxes intersect, none covers a marker.
    /// </summary>
    public static LabelBox?[] Place(IReadOnlyList<(double X, double Y)> points, IReadOnlyList<(double Width, double Height)> sizes, LabelBox area,
        double markerRadius, IReadOnlyList<LabelBox> reserved)
    {
        var obstacles = new List<LabelBox>(reserved);
        obstacles.AddRange(points.Select(p => new LabelBox(p.X - markerRadius, p.Y - markerRadius, 2 * markerRadius, 2 * markerRadius)));
        var result = new LabelBox?[points.Count];
        double crowdRadius = 40;
        var order = Enumerable.Range(0, points.Count)
            .OrderByDescending(i => points.Count(q => Math.Abs(q.X - points[i].X) < crowdRadius && Math.Abs(q.Y - points[i].Y) < crowdRadius))
            .ThenBy(i => i)
            .ToArray();
        double maxRadius = Math.Sqrt(area.Width * area.Width + area.Height * area.Height);
        foreach (int i in order)
        {
            var (px, py) = points[i];
            var (w, h) = sizes[i];
            LabelBox? found = null;
            for (double r = markerRadius + Gap; found is null && r <= maxRadius; r += r < 40 ? 4 : 10)
            {
                for (int d = 0; d < Directions && found is null; d++)
                {
                    // Right of the point first, then alternately above and below, towards the left.
                    int step = (d + 1) / 2;
                    double angle = (d % 2 == 1 ? -1 : 1) * step * (2 * Math.PI / Directions);
                    double cx = px + r * Math.Cos(angle), cy = py - r * Math.Sin(angle);
                    // The box's side facing the point touches the ring.
                    var box = new LabelBox(cx + (Math.Cos(angle) - 1) * w / 2, cy - (Math.Sin(angle) + 1) * h / 2, w, h);
                    if (box.Inside(area) && !obstacles.Any(o => o.Intersects(box.Grow(Gap))))
                        found = box;
                }
            }
            result[i] = found;
            if (found is { } placed)
                obstacles.Add(placed);
        }
        return result;
    }
}

/// <summary>
/// A roofline chart of a kernel benchmark: x = arithmetic intensity (FLOP/byte), y = GFLOP/s, both
/// log10 (ScottPlot 5 plots the logarithms with log-labelled ticks), the bandwidth roof from the
/// measured copy bandwidth, the fp32 compute roof when the device's spec is known, and one
/// labelled point per kernel/shape that does floating-point work. Labels are laid out in pixels
/// by <see cref="LabelLayout"/> so that none overlaps another, a point or the legend (a CPU run
/// puts many kernels at nearly the same spot); the data area is fixed so that pixels are known
/// before rendering.
/// </summary>
public static class RooflinePlot
{
    const float LabelFontSize = 10;
    const double MarkerSize = 9;
    static readonly PixelPadding Padding = new(90, 30, 70, 50);

    /// <summary>
    /// Throws a clear <see cref="InvalidOperationException"/> unless ScottPlot's native renderer
    /// (SkiaSharp's and HarfBuzzSharp's libraries) loads on this platform: the tool ships them for
    /// the platforms in IlgpuLlama.Cli.csproj's PlotRuntimeIdentifiers only (linux-x64 by default), so a plot
    /// elsewhere stops before the benchmark runs instead of failing with a DllNotFoundException after it.
    /// </summary>
    public static void RequireRenderer()
    {
        string shipped = typeof(RooflinePlot).Assembly.GetCustomAttributes<System.Reflection.AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "PlotRuntimeIdentifiers")?.Value?.Replace(";", ", ") ?? "linux-x64";
        foreach (var (library, assembly) in new[] { ("libSkiaSharp", typeof(SkiaSharp.SKCanvas).Assembly), ("libHarfBuzzSharp", typeof(HarfBuzzSharp.Blob).Assembly) })
        {
            if (!System.Runtime.InteropServices.NativeLibrary.TryLoad(library, assembly, null, out _))
                throw new InvalidOperationException(
                    $"--plot needs {library}, ScottPlot's native renderer, which this build of ilgpu-llama ships for {shipped} only and not for {System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier}; " +
                    "run without --plot and plot the --json output, or build the tool with -p:PlotRuntimeIdentifiers=<this RID>");
        }
    }

    /// <summary>Writes the PNG; returns the number of points plotted.</summary>
    public static int Save(KernelBenchReport report, string path, int width = 1600, int height = 1000)
    {
        var (plot, labels) = Build(report, width, height);
        // Through the output-file policy (atomic write, clear errors naming the file).
        IlgpuLlama.IO.OutputFile.WriteAllBytes(path, plot.GetImageBytes(width, height, ImageFormat.Png));
        return labels.Count;
    }

    /// <summary>The chart and where each point's label was put (pixels of a <paramref name="width"/> x <paramref name="height"/> image).</summary>
    public static (Plot Plot, IReadOnlyList<PlacedLabel> Labels) Build(KernelBenchReport report, int width = 1600, int height = 1000)
    {
        var points = report.Rows.Where(r => r is { Skipped: false, GflopPerS: > 0 } && r.ArithmeticIntensity is > 0).ToList();
        var plot = new Plot();
        plot.Title($"Roofline: {report.Device} ({report.Shapes}, {report.Storage})");
        plot.XLabel("arithmetic intensity (FLOP/byte, log scale)");
        plot.YLabel("GFLOP/s (log scale)");
        plot.Layout.Fixed(Padding);

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

        double yMin = points.Count > 0 ? Math.Floor(points.Min(r => Math.Log10(r.GflopPerS!.Value))) - 0.5 : -1;
        double yMax = Math.Max(roofY.Max(), points.Count > 0 ? points.Max(r => Math.Log10(r.GflopPerS!.Value)) : 0) + 0.5;

        var palette = new ScottPlot.Palettes.Category10();
        var families = points.Select(r => r.Family).Distinct().ToList();
        Color ColorOf(BenchRow r) => palette.GetColor(families.IndexOf(r.Family));
        foreach (var family in families)
        {
            var rows = points.Where(r => r.Family == family).ToList();
            var scatter = plot.Add.Scatter(
                rows.Select(r => Math.Log10(r.ArithmeticIntensity!.Value)).ToArray(),
                rows.Select(r => Math.Log10(r.GflopPerS!.Value)).ToArray());
            scatter.LineWidth = 0;
            scatter.MarkerSize = (float)MarkerSize;
            scatter.Color = ColorOf(rows[0]);
            scatter.LegendText = family;
        }
        plot.ShowLegend(Alignment.UpperLeft);

        // Pixels of the fixed data area.
        var area = new LabelBox(Padding.Left, Padding.Top, width - Padding.Left - Padding.Right, height - Padding.Top - Padding.Bottom);
        double PixelX(double x) => area.Left + (x - x0) / (x1 - x0) * area.Width;
        double PixelY(double y) => area.Top + (yMax - y) / (yMax - yMin) * area.Height;
        double CoordX(double px) => x0 + (px - area.Left) / area.Width * (x1 - x0);
        double CoordY(double py) => yMax - (py - area.Top) / area.Height * (yMax - yMin);

        var texts = points.Select(r => $"{r.Kernel} {r.Shape} b{r.Batch}").ToArray();
        var pixels = points.Select(r => (PixelX(Math.Log10(r.ArithmeticIntensity!.Value)), PixelY(Math.Log10(r.GflopPerS!.Value)))).ToArray();
        var styles = texts.Select(t => new LabelStyle { Text = t, FontSize = LabelFontSize }).ToArray();
        (double, double)[] sizes;
        using (var paint = Paint.NewDisposablePaint())
            sizes = styles.Select(s => s.Measure(paint)).Select(m => ((double)m.Width, (double)m.Height)).ToArray();
        // The legend (upper left of the data area) is kept clear, with a margin for its frame and shadow.
        using var legendImage = plot.Legend.GetImage();
        var legend = new LabelBox(area.Left, area.Top, legendImage.Width + 2 * plot.Legend.Margin.Left + 8, legendImage.Height + 2 * plot.Legend.Margin.Top + 8);
        var boxes = LabelLayout.Place(pixels, sizes, area, MarkerSize / 2 + 1, [legend]);

        var placed = new List<PlacedLabel>();
        for (int i = 0; i < points.Count; i++)
        {
            if (boxes[i] is not { } box)
                throw new InvalidOperationException($"no free place for the label of {texts[i]} in a {width} x {height} roofline; draw a larger image");
            var (px, py) = pixels[i];
            double nearestX = Math.Clamp(px, box.Left, box.Right), nearestY = Math.Clamp(py, box.Top, box.Bottom);
            bool leader = Math.Sqrt((nearestX - px) * (nearestX - px) + (nearestY - py) * (nearestY - py)) > MarkerSize * 1.5;
            var color = ColorOf(points[i]);
            if (leader)
            {
                var line = plot.Add.Line(CoordX(px), CoordY(py), CoordX(nearestX), CoordY(nearestY));
                line.LineWidth = 0.75f;
                line.Color = color.WithAlpha(0.6);
                line.LegendText = "";
            }
            var text = plot.Add.Text(texts[i], CoordX(box.Left), CoordY(box.Top));
            text.LabelFontSize = LabelFontSize;
            text.LabelFontColor = color;
            text.LabelAlignment = Alignment.UpperLeft;
            text.LabelOffsetX = 0;
            text.LabelOffsetY = 0;
            placed.Add(new PlacedLabel(texts[i], px, py, box, leader));
        }

        plot.Axes.SetLimits(x0, x1, yMin, yMax);
        plot.Axes.Bottom.TickGenerator = LogTicks();
        plot.Axes.Left.TickGenerator = LogTicks();
        return (plot, placed);
    }

    static ScottPlot.TickGenerators.NumericAutomatic LogTicks() => new()
    {
        MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
        IntegerTicksOnly = true,
        LabelFormatter = LogTickLabel,
    };

    /// <summary>
    /// The label of the log-axis tick at log10 value <paramref name="v"/>: 1,000 or 0.01 down to 0.001,
    /// 1e-4 and below (a fixed format would print those as "0").
    /// </summary>
    public static string LogTickLabel(double v)
    {
        double p = Math.Pow(10, v);
        var c = System.Globalization.CultureInfo.InvariantCulture;
        if (p >= 1)
            return p.ToString("#,0", c);
        if (p >= 0.001)
            return p.ToString("0.###", c);
        return "1e" + Math.Round(v).ToString("0", c);
    }
}
