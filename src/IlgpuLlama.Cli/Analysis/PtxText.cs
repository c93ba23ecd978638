using System.Text.RegularExpressions;

namespace IlgpuLlama.Cli.Analysis;

/// <summary>Facts read from a kernel's PTX text (the <c>ptx</c> command writes them; the ptxas report checks them).</summary>
public static partial class PtxText
{
    [GeneratedRegex(@"\bld\.global(\.nc)?\.v4\.")]
    private static partial Regex GlobalV4Load();

    /// <summary>Number of 128-bit global loads (<c>ld.global.v4.*</c> or <c>ld.global.nc.v4.*</c>) in a PTX text.</summary>
    public static int CountGlobalV4Loads(string ptx) => GlobalV4Load().Count(ptx);
}
