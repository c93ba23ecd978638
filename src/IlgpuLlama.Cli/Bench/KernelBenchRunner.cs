using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Bench;

namespace IlgpuLlama.Cli.Bench;

/// <summary>One benchmarked kernel/shape.</summary>
public sealed record BenchRow(
    string Kernel,
    string Family,
    string Shape,
    int Batch,
    int Copies,
    long Bytes,
    long Flops,
    double? TimeUs,
    double? MinTimeUs,
    double? GbPerS,
    double? GflopPerS,
    double? PctCopyBandwidth,
    double? PctSpecBandwidth,
    Validation Validation,
    bool Skipped,
    string? Note)
{
    /// <summary>FLOP per byte, or null for kernels without floating-point work.</summary>
    public double? ArithmeticIntensity => Flops > 0 && Bytes > 0 ? (double)Flops / Bytes : null;
}

/// <summary>Measured device-to-device copy bandwidth (bytes read + written).</summary>
public sealed record CopyBandwidth(long BufferBytes, long BytesMoved, double TimeUs, double GbPerS);

/// <summary>A whole run (the JSON shape of <c>bench kernels --json</c>).</summary>
public sealed record KernelBenchReport(
    string Device,
    string DeviceKind,
    string Shapes,
    string Storage,
    int Repeats,
    int Warmup,
    string Timing,
    string Rotation,
    CopyBandwidth CopyBandwidth,
    string? SpecName,
    double? SpecBandwidthGbPerS,
    double? SpecFp32GflopPerS,
    IReadOnlyList<BenchRow> Rows)
{
    /// <summary>Rows whose validation failed (skipped rows excluded).</summary>
    public int FailedValidations => Rows.Count(r => !r.Skipped && !r.Validation.Passed);
}

/// <summary>Options of one run.</summary>
/// <param name="Repeats">timed launches; null: 20 on CUDA, 5 on the CPU accelerator</param>
/// <param name="Warmup">untimed launches; null: 3 on CUDA, 1 on the CPU accelerator</param>
/// <param name="Filters">case-name patterns (<see cref="BenchCaseFilter"/>); empty: every case</param>
/// <param name="BackToBack">time the repeats as one run of launches back to back (no L2 flush or marker between them) and
/// report the mean per launch, so a kernel shorter than the launch overhead is not hidden behind it; the rotated input
/// copies still keep its weights out of L2</param>
public sealed record KernelBenchOptions(DeviceKind Device, string? Shapes, WeightFormat Format, int? Repeats, int? Warmup, int Seed = 1234,
    IReadOnlyList<string>? Filters = null, bool BackToBack = false);

/// <summary>
/// Which bench cases a run keeps: each case is named <c>kernel shape bN</c> (as the progress lines
/// and <c>bench kernels --list</c> show it); a pattern with <c>*</c> or <c>?</c> is a glob over the
/// whole name or the kernel name, any other pattern a substring of the name; case is ignored and a
/// case is kept when any pattern matches.
/// </summary>
public static class BenchCaseFilter
{
    /// <summary>The name a case is listed and filtered by.</summary>
    public static string Name(BenchCase c) => $"{c.Kernel} {c.Shape} b{c.Batch}";

    /// <summary>True when <paramref name="pattern"/> matches the case.</summary>
    public static bool Matches(BenchCase c, string pattern)
    {
        string name = Name(c);
        if (pattern.IndexOfAny(['*', '?']) < 0)
            return name.Contains(pattern, StringComparison.OrdinalIgnoreCase);
        var glob = new System.Text.RegularExpressions.Regex(
            "^" + System.Text.RegularExpressions.Regex.Escape(pattern).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$",
            System.Text.RegularExpressions.RegexOptions.IgnoreCase | System.Text.RegularExpressions.RegexOptions.CultureInvariant);
        return glob.IsMatch(name) || glob.IsMatch(c.Kernel);
    }

    /// <summary>
    /// The cases <paramref name="filters"/> keep (all when there are none); a filter that keeps
    /// nothing is an error naming how to see the names.
    /// </summary>
    public static IReadOnlyList<BenchCase> Select(IReadOnlyList<BenchCase> cases, IReadOnlyList<string>? filters)
    {
        var patterns = (filters ?? []).SelectMany(f => f.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
        if (patterns.Length == 0)
            return cases;
        var kept = cases.Where(c => patterns.Any(p => Matches(c, p))).ToArray();
        if (kept.Length == 0)
            throw new ArgumentException(
                $"--filter '{string.Join(",", patterns)}' matches none of the {cases.Count} cases; 'ilgpu-llama bench kernels --list' prints their names (with the same --shapes and --dtype)");
        return kept;
    }
}

/// <summary>The bench context of a run: case buffers come from the tracking allocator (category Other, names bench.*) and are freed after each case.</summary>
sealed class TrackedBenchContext(LlamaKernels kernels, DeviceAllocator allocator, bool isGpu, int seed) : BenchContext(kernels, isGpu, seed)
{
    readonly List<IDisposable> owned = [];

    public override ArrayView<T> Alloc<T>(string name, params long[] shape)
    {
        var b = allocator.Allocate<T>(name, MemoryCategory.Other, shape);
        owned.Add(b);
        return b.View;
    }

    /// <summary>Frees every buffer of the current case.</summary>
    public void ReleaseCase()
    {
        foreach (var d in owned)
            d.Dispose();
        owned.Clear();
    }
}

/// <summary>
/// Runs the kernel microbenchmarks (llm.c dev/cuda style): for each case allocate (through the
/// tracking allocator), fill with random data, validate the first launch against the CPU
/// reference, warm up, then time <c>repeats</c> launches and report the median.
/// On CUDA each timed launch is bracketed by profiling markers (CUDA events) on the kernels'
/// stream and preceded by a 128 MB device copy that flushes L2 and keeps the GPU busy while the
/// host enqueues the launch, so the markers time the kernel and not host launch overhead; the
/// streamed inputs are also rotated through copies totalling &gt;= 200 MB. On the CPU
/// accelerator a Stopwatch times launch + synchronize.
/// </summary>
public sealed class KernelBenchRunner
{
    const long FlushBytes = 128L * 1024 * 1024;

    /// <summary>Runs everything. <paramref name="progress"/> receives one line per step.</summary>
    public static KernelBenchReport Run(KernelBenchOptions options, Action<string> progress)
    {
        using var device = ComputeDevice.Create(options.Device);
        options = options with
        {
            Repeats = options.Repeats ?? (device.IsCuda ? 20 : 5),
            Warmup = options.Warmup ?? (device.IsCuda ? 3 : 1),
        };
        if (options.Repeats < 1)
            throw new ArgumentException($"--repeats {options.Repeats.Value} must be at least 1");
        if (options.Warmup < 0)
            throw new ArgumentException($"--warmup {options.Warmup.Value} must be at least 0");
        var format = options.Format;
        var shapes = BenchShapes.Parse(options.Shapes ?? DefaultShapes(device.IsCuda));
        // Filtered before anything is compiled or measured, so a bad filter fails at once.
        var cases = BenchCaseFilter.Select(BenchCatalog.Cases(shapes, format), options.Filters);
        string description = device.IsCuda
            ? device.Description
            : $"ILGPU CPU accelerator (warp {device.Accelerator.WarpSize}, max group {device.Accelerator.MaxNumThreadsPerGroup}, {device.Accelerator.NumMultiprocessors} emulated multiprocessors)";
        progress($"device: {description}");
        if (!device.IsCuda && shapes.Name != "tiny")
            progress($"warning: {shapes.Name} shapes on the CPU accelerator take a long time, and kernels whose groups exceed {device.Accelerator.MaxNumThreadsPerGroup} threads are skipped; use --shapes tiny");
        var sw = Stopwatch.StartNew();
        var kernels = new LlamaKernels(device.Accelerator);
        progress($"compiled kernels in {sw.Elapsed.TotalSeconds:F1} s");
        using var allocator = new DeviceAllocator(device.Accelerator);
        var ctx = new TrackedBenchContext(kernels, allocator, device.IsCuda, options.Seed);
        var accelerator = device.Accelerator;

        long copyBytes = device.IsCuda ? Math.Min(1L << 30, device.Accelerator.MemorySize / 8) : 64L << 20;
        var src = allocator.Allocate<byte>("bench.copy.src", MemoryCategory.Other, copyBytes);
        var dst = allocator.Allocate<byte>("bench.copy.dst", MemoryCategory.Other, copyBytes);
        try
        {
            src.View.MemSet(0x5A);
            dst.View.MemSet(0);
            accelerator.Synchronize();
            var copy = MeasureCopy(accelerator, device.IsCuda, src, dst);
            progress($"device-to-device copy of {copyBytes >> 20} MiB: {copy.GbPerS:F1} GB/s (bytes read + written)");

            var spec = device.IsCuda ? DeviceSpecs.Lookup(accelerator.Name, accelerator.MemorySize) : null;
            var rows = new List<BenchRow>();
            Action flush = device.IsCuda
                ? () => dst.View.SubView(0, Math.Min(FlushBytes, copyBytes)).CopyFrom(kernels.Stream, src.View.SubView(0, Math.Min(FlushBytes, copyBytes)))
                : () => { };
            for (int i = 0; i < cases.Count; i++)
            {
                var c = cases[i];
                string label = $"[{i + 1}/{cases.Count}] {c.Kernel} {c.Shape} b{c.Batch}";
                var row = RunCase(ctx, c, options, copy, spec, flush);
                progress(row.Skipped
                    ? $"{label}: skipped ({row.Validation.Report})"
                    : $"{label}: {(row.Validation.Passed ? "ok" : "FAILED")} ({row.Validation.Method}, max error {(row.Validation.MaxErrorFraction is double f ? f.ToString("F3", System.Globalization.CultureInfo.InvariantCulture) : "n/a")}x tolerance), median {row.TimeUs:F1} us");
                if (!row.Skipped && !row.Validation.Passed)
                    progress($"    {row.Validation.Report}");
                rows.Add(row);
            }

            string timing = options.BackToBack
                ? device.IsCuda
                    ? $"back to back: CUDA events around {options.Repeats.Value} consecutive launches (no flush or marker between them), mean per launch; {options.Warmup.Value} warm-up launches"
                    : $"back to back: Stopwatch around {options.Repeats.Value} consecutive launches + one synchronize, mean per launch; {options.Warmup.Value} warm-up launches"
                : device.IsCuda
                ? $"CUDA events (ILGPU profiling markers) around each launch, a {FlushBytes >> 20} MiB device copy before each (flushes L2, hides launch overhead); median of {options.Repeats.Value} after {options.Warmup.Value} warm-up launches"
                : $"Stopwatch around launch + synchronize; median of {options.Repeats.Value} after {options.Warmup.Value} warm-up launches";
            string rotation = device.IsCuda
                ? $"streamed inputs replicated so that the copies total >= {BenchContext.RotationBytes / 1_000_000} MB (4 x a 50 MB L2), at most {BenchContext.MaxCopies} copies; launch i reads copy i mod copies"
                : "none on the CPU accelerator (1 copy)";
            return new KernelBenchReport(description, device.IsCuda ? "cuda" : "cpu", shapes.Name,
                format.Name, options.Repeats.Value, options.Warmup.Value, timing, rotation, copy,
                spec?.Name, spec?.BandwidthGBs, spec?.Fp32Gflops, rows);
        }
        finally
        {
            ctx.ReleaseCase();
            src.Dispose();
            dst.Dispose();
        }
    }

    /// <summary>The shape set used when none is given: Llama 3.2 1B on CUDA, tiny on the CPU accelerator.</summary>
    public static string DefaultShapes(bool cuda) => cuda ? "llama-3.2-1b" : "tiny";

    static CopyBandwidth MeasureCopy(Accelerator accelerator, bool cuda, DeviceBuffer<byte> src, DeviceBuffer<byte> dst)
    {
        const int warmup = 2, repeats = 10;
        var stream = accelerator.DefaultStream;
        var times = new List<double>();
        for (int r = 0; r < warmup + repeats; r++)
        {
            double us;
            if (cuda)
            {
                using var start = stream.AddProfilingMarker();
                dst.View.CopyFrom(stream, src.View);
                using var end = stream.AddProfilingMarker();
                us = (end - start).TotalMicroseconds;
            }
            else
            {
                var sw = Stopwatch.StartNew();
                dst.View.CopyFrom(stream, src.View);
                stream.Synchronize();
                us = sw.Elapsed.TotalMicroseconds;
            }
            if (r >= warmup)
                times.Add(us);
        }
        double median = Statistics.Median(times);
        long moved = 2 * src.Length;
        return new CopyBandwidth(src.Length, moved, median, moved / (median * 1e3));
    }

    static BenchRow RunCase(TrackedBenchContext ctx, BenchCase c, KernelBenchOptions options, CopyBandwidth copy, DeviceSpec? spec, Action flush)
    {
        PreparedCase prepared;
        Validation validation;
        try
        {
            prepared = c.Prepare(ctx);
            validation = prepared.Validate();
        }
        catch (ArgumentException e)
        {
            // The launcher's shape checks reject this shape on this device (e.g. a group larger than the CPU accelerator allows).
            ctx.ReleaseCase();
            return new BenchRow(c.Kernel, c.Family, c.Shape, c.Batch, 0, c.Bytes, c.Flops, null, null, null, null, null, null,
                Validation.Failed("launch rejected", e.Message), true, "launch rejected on this device");
        }

        try
        {
            var times = options.BackToBack
                ? TimeBackToBack(ctx, prepared, options.Warmup ?? 0, options.Repeats ?? 1)
                : Time(ctx, prepared, options.Warmup ?? 0, options.Repeats ?? 1, flush);
            double median = Statistics.Median(times);
            double gbs = c.Bytes / (median * 1e3);
            double? gflops = c.Flops > 0 ? c.Flops / (median * 1e3) : null;
            return new BenchRow(c.Kernel, c.Family, c.Shape, c.Batch, prepared.Copies, c.Bytes, c.Flops, median, times.Min(), gbs, gflops,
                100 * gbs / copy.GbPerS, spec is null ? null : 100 * gbs / spec.BandwidthGBs, validation, false, prepared.Note);
        }
        finally
        {
            ctx.ReleaseCase();
        }
    }

    /// <summary>
    /// One timing of <paramref name="repeats"/> launches enqueued back to back (launch i reads input copy
    /// i mod copies, as in <see cref="Time"/>), returned as that many equal per-launch times.
    /// </summary>
    static List<double> TimeBackToBack(BenchContext ctx, PreparedCase p, int warmup, int repeats)
    {
        var stream = ctx.Kernels.Stream;
        for (int w = 0; w < warmup; w++)
            p.Launch(1 + w);
        stream.Synchronize();
        double total;
        if (ctx.IsGpu)
        {
            using var start = stream.AddProfilingMarker();
            for (int r = 0; r < repeats; r++)
                p.Launch(1 + warmup + r);
            using var end = stream.AddProfilingMarker();
            stream.Synchronize();
            total = (end - start).TotalMicroseconds;
        }
        else
        {
            var sw = Stopwatch.StartNew();
            for (int r = 0; r < repeats; r++)
                p.Launch(1 + warmup + r);
            stream.Synchronize();
            total = sw.Elapsed.TotalMicroseconds;
        }
        return Enumerable.Repeat(total / repeats, repeats).ToList();
    }

    static List<double> Time(BenchContext ctx, PreparedCase p, int warmup, int repeats, Action flush)
    {
        var accelerator = ctx.Kernels.Accelerator;
        var stream = ctx.Kernels.Stream;
        var times = new List<double>(repeats);
        if (ctx.IsGpu)
        {
            for (int w = 0; w < warmup; w++)
            {
                flush();
                p.Launch(1 + w);
            }
            stream.Synchronize();
            var markers = new List<(ProfilingMarker Start, ProfilingMarker End)>(repeats);
            try
            {
                for (int r = 0; r < repeats; r++)
                {
                    flush();
                    var start = stream.AddProfilingMarker();
                    p.Launch(1 + warmup + r);
                    var end = stream.AddProfilingMarker();
                    markers.Add((start, end));
                }
                stream.Synchronize();
                foreach (var (start, end) in markers)
                    times.Add((end - start).TotalMicroseconds);
            }
            finally
            {
                foreach (var (start, end) in markers)
                {
                    start.Dispose();
                    end.Dispose();
                }
            }
        }
        else
        {
            for (int w = 0; w < warmup; w++)
            {
                p.Launch(1 + w);
                accelerator.Synchronize();
            }
            var sw = new Stopwatch();
            for (int r = 0; r < repeats; r++)
            {
                sw.Restart();
                p.Launch(1 + warmup + r);
                accelerator.Synchronize();
                times.Add(sw.Elapsed.TotalMicroseconds);
            }
        }
        return times;
    }
}
