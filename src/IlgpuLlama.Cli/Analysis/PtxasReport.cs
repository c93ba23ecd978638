using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Cli.Analysis;

/// <summary>One kernel's static resources, load widths, occupancy and check result.</summary>
public sealed record PtxasRow(
    string Kernel,
    string Family,
    int Registers,
    int StaticSharedBytes,
    int DynamicSharedBytes,
    int StackFrameBytes,
    int SpillStoreBytes,
    int SpillLoadBytes,
    int PtxGlobalV4Loads,
    int? SassLdg128,
    int? SassLocalAccesses,
    int GroupSize,
    bool AutoGroup,
    int BlocksPerSm,
    double Occupancy,
    string Limiter,
    IReadOnlyList<string> Problems);

/// <summary>The whole report (the JSON shape of <c>ptxas-report --json</c>).</summary>
public sealed record PtxasReportResult(string Arch, string? ToolVersion, IReadOnlyList<PtxasRow> Kernels)
{
    /// <summary>True when no kernel has a problem.</summary>
    public bool Passed => Kernels.All(k => k.Problems.Count == 0);
}

/// <summary>
/// Reads what tools/ptxas-check.sh produced for every catalog kernel (DIR/&lt;kernel&gt;.ptx, the
/// <c>ptxas -v</c> log DIR/&lt;kernel&gt;.ptxas.txt and the <c>cuobjdump -sass</c> listing
/// DIR/&lt;kernel&gt;.sass) and applies the static checks:
/// <list type="bullet">
/// <item>ptxas reported no error and a register count for the kernel's entry;</item>
/// <item>no local memory: stack frame, spill stores and spill loads are all 0 for every function
/// (a non-zero stack frame without spills would be a local array, just as slow on a P100, so it fails too),
/// and the SASS has no LDL/STL instruction;</item>
/// <item>decode matmuls (matvec_*): the PTX has 128-bit global loads (ld.global[.nc].v4) and the SASS has LDG.E.128.</item>
/// </list>
/// </summary>
public static partial class PtxasReport
{
    /// <summary>Marker opening the generated table in docs/kernels.md.</summary>
    public const string StartMarker = "<!-- ptxas-table:start -->";

    /// <summary>Marker closing the generated table.</summary>
    public const string EndMarker = "<!-- ptxas-table:end -->";

    [GeneratedRegex(@"\bLDG(\.[A-Z0-9_]+)*\.128\b")]
    private static partial Regex Ldg128();

    [GeneratedRegex(@"\b(LDL|STL)(\.[A-Z0-9_]+)*\s")]
    private static partial Regex LocalAccess();

    /// <summary>128-bit global loads in a SASS listing.</summary>
    public static int CountLdg128(string sass) => Ldg128().Count(sass);

    /// <summary>Local-memory loads/stores (LDL/STL) in a SASS listing.</summary>
    public static int CountLocalAccesses(string sass) => LocalAccess().Count(sass);

    /// <summary>True for the decode matmul kernels, which must read weights 128 bits at a time.</summary>
    public static bool IsDecodeMatmul(string kernel) => kernel.StartsWith("matvec", StringComparison.Ordinal);

    /// <summary>Builds the report from the files in <paramref name="directory"/>.</summary>
    public static PtxasReportResult Build(string directory, string arch, string? toolVersion = null)
    {
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"ptxas-report: directory {directory} does not exist");
        var spec = GpuSpec.For(arch);
        var rows = new List<PtxasRow>();
        foreach (var entry in KernelCatalog.All)
            rows.Add(Row(entry, directory, spec));
        return new PtxasReportResult(arch, toolVersion, rows);
    }

    static string? ReadOptional(string path) => File.Exists(path) ? IlgpuLlama.IO.InputFile.ReadAllText(path) : null;

    static PtxasRow Row(KernelEntry entry, string directory, GpuSpec spec)
    {
        var problems = new List<string>();
        string name = entry.Name;
        string? ptx = ReadOptional(Path.Combine(directory, name + ".ptx"));
        string? log = ReadOptional(Path.Combine(directory, name + ".ptxas.txt"));
        string? sass = ReadOptional(Path.Combine(directory, name + ".sass"));
        if (ptx is null)
            problems.Add($"{name}.ptx is missing");
        if (log is null)
            problems.Add($"{name}.ptxas.txt (ptxas -v output) is missing");

        var functions = log is null ? [] : PtxasLog.Parse(log);
        if (log is not null)
            problems.AddRange(PtxasLog.Errors(log));
        var kernel = functions.FirstOrDefault(f => f.IsEntry);
        if (log is not null && (kernel is null || kernel.Registers < 0))
            problems.Add("ptxas reported no register count for an entry function");
        foreach (var f in functions.Where(f => f.LocalMemoryBytes > 0))
        {
            problems.Add($"local memory in {f.Name}: {f.StackFrameBytes} bytes stack frame, {f.SpillStoreBytes} bytes spill stores, {f.SpillLoadBytes} bytes spill loads");
        }

        int v4 = ptx is null ? 0 : PtxText.CountGlobalV4Loads(ptx);
        int? ldg128 = sass is null ? null : CountLdg128(sass);
        int? local = sass is null ? null : CountLocalAccesses(sass);
        if (local > 0)
            problems.Add($"SASS has {local} local-memory instructions (LDL/STL)");
        if (IsDecodeMatmul(name))
        {
            if (ptx is not null && v4 == 0)
                problems.Add("PTX has no 128-bit global load (ld.global.v4 / ld.global.nc.v4)");
            if (sass is null)
                problems.Add($"{name}.sass (cuobjdump -sass output) is missing");
            else if (ldg128 == 0)
                problems.Add("SASS has no LDG.E.128");
        }

        var shape = entry.GpuLaunch;
        int regs = kernel?.Registers ?? 0;
        int staticShared = kernel?.StaticSharedBytes ?? 0;
        int shared = staticShared + shape.DynamicSharedBytes;
        var occupancy = shape.GroupSize is int g
            ? Occupancy.Compute(spec, regs, shared, g)
            : Occupancy.AutoBlockSize(spec, regs, shared);
        var stack = functions.Aggregate((Frame: 0, Stores: 0, Loads: 0), (a, f) => (a.Frame + f.StackFrameBytes, a.Stores + f.SpillStoreBytes, a.Loads + f.SpillLoadBytes));
        return new PtxasRow(name, entry.Family, regs, staticShared, shape.DynamicSharedBytes, stack.Frame, stack.Stores, stack.Loads,
            v4, ldg128, local, occupancy.BlockSize, shape.GroupSize is null, occupancy.BlocksPerSm, occupancy.Fraction, occupancy.Limiter, problems);
    }

    /// <summary>The markdown table (with a short preamble) that goes between the markers.</summary>
    public static string Markdown(PtxasReportResult report)
    {
        var spec = GpuSpec.For(report.Arch);
        var sb = new StringBuilder();
        string tool = report.ToolVersion is { Length: > 0 } v ? $" ({v})" : "";
        sb.AppendLine($"Generated by `tools/ptxas-check.sh` from `ptxas -arch={report.Arch} -v`{tool} and `cuobjdump -sass`; do not edit by hand.");
        sb.AppendLine($"Occupancy: {report.Arch} limits ({spec.RegistersPerSm / 1024}K registers, {spec.MaxThreadsPerSm} threads, {spec.MaxBlocksPerSm} blocks, " +
            $"{spec.SharedPerSm / 1024} KB shared per SM; {spec.SharedPerBlock / 1024} KB per block; registers allocated per warp in units of {spec.RegisterGranularity}) " +
            "at the group size the engine launches on a GPU, with Llama 3.2 1B shapes for dynamic shared memory. " +
            "Matvec is launched with in/32 threads (64 at hidden 2048, 256 for the down projection): the table uses 256. " +
            "`auto` = implicitly grouped kernel; the size shown is what CUDA's occupancy API (used by ILGPU's auto-grouped launch) picks: the largest block reaching the highest occupancy.");
        sb.AppendLine();
        sb.AppendLine("| kernel | registers | static smem (B) | dynamic smem (B) | stack / spill st / spill ld (B) | 128-bit loads PTX / SASS | local LDL/STL | group | blocks/SM | occupancy | limited by | check |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
        foreach (var r in report.Kernels)
        {
            string sassLoads = r.SassLdg128?.ToString(CultureInfo.InvariantCulture) ?? "n/a";
            string local = r.SassLocalAccesses?.ToString(CultureInfo.InvariantCulture) ?? "n/a";
            string group = r.AutoGroup ? $"auto ({r.GroupSize})" : r.GroupSize.ToString(CultureInfo.InvariantCulture);
            string check = r.Problems.Count == 0 ? "ok" : "FAIL: " + string.Join("; ", r.Problems).Replace("|", "\\|");
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Kernel} | {r.Registers} | {r.StaticSharedBytes} | {r.DynamicSharedBytes} | {r.StackFrameBytes} / {r.SpillStoreBytes} / {r.SpillLoadBytes} | {r.PtxGlobalV4Loads} / {sassLoads} | {local} | {group} | {r.BlocksPerSm} | {r.Occupancy * 100:F1}% | {r.Limiter} | {check} |");
        }
        return sb.ToString();
    }

    /// <summary>Replaces the text between the markers of <paramref name="document"/> with <paramref name="table"/>.</summary>
    public static string ReplaceBetweenMarkers(string document, string table)
    {
        int start = document.IndexOf(StartMarker, StringComparison.Ordinal);
        int end = document.IndexOf(EndMarker, StringComparison.Ordinal);
        if (start < 0 || end < 0 || end < start)
            throw new InvalidOperationException($"the document has no '{StartMarker}' ... '{EndMarker}' section to update");
        int contentStart = start + StartMarker.Length;
        return document[..contentStart] + "\n" + table.TrimEnd('\n') + "\n" + document[end..];
    }
}
