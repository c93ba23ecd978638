using IlgpuLlama.Cli.Bench;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Bench;

namespace IlgpuLlama.Tests.Cli;

/// <summary>The roofline's labels: laid out so that none overlaps another label, a point or the legend, at the pixels ScottPlot draws.</summary>
public sealed class RooflinePlotTests
{
    /// <summary>A CPU-like run: every tiny-shape case, GFLOP/s from <paramref name="gflops"/>(case index, arithmetic intensity).</summary>
    static KernelBenchReport Report(Func<int, double, double> gflops)
    {
        var cases = BenchCatalog.Cases(BenchShapes.Parse("tiny"), WeightFormat.Fp16);
        var rows = cases.Select((c, i) =>
        {
            double? g = c.Flops > 0 ? gflops(i, (double)c.Flops / c.Bytes) : null;
            return new BenchRow(c.Kernel, c.Family, c.Shape, c.Batch, 1, c.Bytes, c.Flops, 100, 100, 0.01, g, 0.1, null,
                new Validation(true, "all", "tol", 0, "ok"), false, null);
        }).ToList();
        return new KernelBenchReport("ILGPU CPU accelerator (test)", "cpu", "tiny", "fp16", 1, 0, "t", "r", new CopyBandwidth(1 << 20, 2 << 20, 100, 21),
            null, null, null, rows);
    }

    static void AssertNoOverlaps(KernelBenchReport report, int width, int height)
    {
        var (plot, labels) = RooflinePlot.Build(report, width, height);
        int expected = report.Rows.Count(r => r.GflopPerS > 0);
        Assert.Equal(expected, labels.Count);
        Assert.Equal(labels.Count, labels.Select(l => l.Text).Distinct().Count());
        var image = new LabelBox(0, 0, width, height);
        for (int i = 0; i < labels.Count; i++)
        {
            var a = labels[i];
            Assert.True(a.Box.Inside(image), $"{a.Text} at {a.Box} leaves the image");
            Assert.True(a.Box.Width > 20 && a.Box.Height > 5, $"{a.Text}: box {a.Box} is not a measured text box");
            for (int j = 0; j < labels.Count; j++)
            {
                var b = labels[j];
                if (i != j)
                    Assert.False(a.Box.Intersects(b.Box), $"labels '{a.Text}' {a.Box} and '{b.Text}' {b.Box} overlap");
                // No label covers a point's marker (9 px).
                Assert.False(a.Box.Intersects(new LabelBox(b.PointX - 4.5, b.PointY - 4.5, 9, 9)), $"label '{a.Text}' covers the point of '{b.Text}'");
            }
        }

        // The layout's pixels are ScottPlot's: each point lands where the layout put it.
        plot.RenderInMemory(width, height);
        var rows = report.Rows.Where(r => r.GflopPerS > 0).ToList();
        for (int i = 0; i < labels.Count; i++)
        {
            var pixel = plot.GetPixel(new ScottPlot.Coordinates(Math.Log10(rows[i].ArithmeticIntensity!.Value), Math.Log10(rows[i].GflopPerS!.Value)));
            Assert.InRange(Math.Abs(pixel.X - labels[i].PointX), 0, 1.5);
            Assert.InRange(Math.Abs(pixel.Y - labels[i].PointY), 0, 1.5);
        }
    }

    [Fact]
    public void Labels_of_a_cpu_run_do_not_overlap()
    {
        // As on the CPU accelerator: most kernels at an intensity near 1 and within a factor of ten in speed.
        AssertNoOverlaps(Report((i, ai) => 0.002 * ai * (1 + 0.37 * (i % 5))), 1600, 1000);
    }

    [Fact]
    public void Labels_do_not_overlap_even_when_every_point_is_in_one_spot()
    {
        var crowded = Report((_, _) => 0.01);
        crowded = crowded with { Rows = crowded.Rows.Select(r => r with { Bytes = 1000, Flops = r.Flops > 0 ? 1000 : 0 }).ToList() };
        AssertNoOverlaps(crowded, 1600, 1000);
    }

    [Fact]
    public void The_plot_is_written()
    {
        string path = Path.Combine(Path.GetTempPath(), $"roofline-{Guid.NewGuid():N}.png");
        try
        {
            int n = RooflinePlot.Save(Report((i, ai) => 0.002 * ai), path);
            Assert.True(n > 20);
            Assert.True(new FileInfo(path).Length > 10_000);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Log_ticks_never_read_zero()
    {
        Assert.Equal("1,000", RooflinePlot.LogTickLabel(3));
        Assert.Equal("1", RooflinePlot.LogTickLabel(0));
        Assert.Equal("0.01", RooflinePlot.LogTickLabel(-2));
        Assert.Equal("0.001", RooflinePlot.LogTickLabel(-3));
        Assert.Equal("1e-4", RooflinePlot.LogTickLabel(-4));
        Assert.Equal("1e-6", RooflinePlot.LogTickLabel(-6));
        Assert.All(Enumerable.Range(-9, 15), e => Assert.NotEqual("0", RooflinePlot.LogTickLabel(e)));
    }

    [Fact]
    public void Boxes_intersect_only_when_they_share_area()
    {
        var a = new LabelBox(0, 0, 10, 10);
        Assert.True(a.Intersects(new LabelBox(9, 9, 5, 5)));
        Assert.False(a.Intersects(new LabelBox(10, 0, 5, 5)));
        Assert.False(a.Intersects(new LabelBox(0, 11, 5, 5)));
        Assert.True(new LabelBox(2, 2, 3, 3).Inside(a));
    }

    /// <summary>
    /// Issue 23 item 8: the tool carries ScottPlot's native renderer for the platforms in
    /// PlotRuntimeIdentifiers (linux-x64), not ScottPlot's 15 (150 MB), and it loads here.
    /// </summary>
    [Fact]
    public void The_tool_carries_the_plot_renderer_for_linux_x64_only_and_it_loads_here()
    {
        string deps = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "ilgpu-llama.deps.json"));
        var runtimes = System.Text.RegularExpressions.Regex.Matches(deps, @"""runtimes/([^/]+)/native/lib(?:SkiaSharp|HarfBuzzSharp)\.\w+""")
            .Select(m => m.Groups[1].Value).Distinct().ToArray();
        Assert.Equal(["linux-x64"], runtimes);
        if (OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64)
            RooflinePlot.RequireRenderer();
    }
}
