using System.Globalization;
using System.Text;

namespace IlgpuLlama.Cli.Bench;

/// <summary>Text renderings of a kernel benchmark report: markdown (default) and CSV.</summary>
public static class BenchOutput
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    static string F(double? v, string format) => v is double d ? d.ToString(format, Inv) : "";

    /// <summary>Three significant digits below 100 (CPU numbers are small), one decimal above.</summary>
    static string N(double? v) => v switch
    {
        null => "",
        < 100 and > -100 => Sig3(v.Value),
        double d => d.ToString("F1", Inv),
    };

    static string Sig3(double d)
    {
        if (d == 0)
            return "0";
        int decimals = Math.Clamp(2 - (int)Math.Floor(Math.Log10(Math.Abs(d))), 0, 8);
        return d.ToString("F" + decimals, Inv);
    }

    static string Err(double? fraction) => fraction is double f ? f.ToString("F2", Inv) : "n/a";

    static string Check(BenchRow r) => r.Skipped
        ? "skipped: " + r.Validation.Report
        : (r.Validation.Passed ? "ok" : "FAIL") + $" ({r.Validation.Method}, {Err(r.Validation.MaxErrorFraction)}x tol)"
          + (r.Note is null ? "" : $"; {r.Note}");

    /// <summary>A markdown report: device and bandwidth lines, then one table row per case.</summary>
    public static string Markdown(KernelBenchReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine(Inv, $"Device: {r.Device}; shapes: {r.Shapes}; weights: {r.Storage}");
        sb.AppendLine(Inv, $"Measured copy bandwidth: {r.CopyBandwidth.GbPerS:F1} GB/s (device-to-device copy of {r.CopyBandwidth.BufferBytes >> 20} MiB, bytes read + written)");
        sb.AppendLine(r.SpecBandwidthGbPerS is double spec
            ? string.Create(Inv, $"Spec bandwidth: {spec:F0} GB/s ({r.SpecName}); fp32 peak: {(r.SpecFp32GflopPerS is double f ? $"{f / 1000:F1} TFLOP/s" : "unknown")}")
            : "Spec bandwidth: unknown");
        sb.AppendLine($"Timing: {r.Timing}");
        sb.AppendLine($"Rotation: {r.Rotation}");
        sb.AppendLine();
        sb.AppendLine("| kernel | shape | batch | time (us) | GB/s | GFLOP/s | % copy BW | % spec BW | copies | check |");
        sb.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var row in r.Rows)
        {
            sb.AppendLine(Inv,
                $"| {row.Kernel} | {row.Shape} | {row.Batch} | {N(row.TimeUs)} | {N(row.GbPerS)} | {N(row.GflopPerS)} | {N(row.PctCopyBandwidth)} | {(r.SpecBandwidthGbPerS is null ? "unknown" : N(row.PctSpecBandwidth))} | {row.Copies} | {Check(row).Replace("|", "\\|")} |");
        }
        return sb.ToString();
    }

    static string Csv(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

    /// <summary>CSV with a header row; empty fields where a value does not apply.</summary>
    public static string ToCsv(KernelBenchReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine("kernel,family,shape,batch,time_us,min_time_us,bytes,flops,gb_per_s,gflop_per_s,pct_copy_bandwidth,pct_spec_bandwidth,copies,validation_passed,validation_method,max_error_fraction,skipped");
        foreach (var row in r.Rows)
        {
            sb.AppendLine(string.Join(",",
                Csv(row.Kernel), Csv(row.Family), Csv(row.Shape), row.Batch.ToString(Inv), F(row.TimeUs, "G6"), F(row.MinTimeUs, "G6"),
                row.Bytes.ToString(Inv), row.Flops.ToString(Inv), F(row.GbPerS, "G6"), F(row.GflopPerS, "G6"), F(row.PctCopyBandwidth, "G6"),
                F(row.PctSpecBandwidth, "G6"), row.Copies.ToString(Inv), row.Validation.Passed ? "true" : "false", Csv(row.Validation.Method),
                row.Validation.MaxErrorFraction is double f ? f.ToString("G6", Inv) : "",
                row.Skipped ? "true" : "false"));
        }
        return sb.ToString();
    }
}
