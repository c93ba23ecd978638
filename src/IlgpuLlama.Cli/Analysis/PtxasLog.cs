using System.Globalization;
using System.Text.RegularExpressions;

namespace IlgpuLlama.Cli.Analysis;

/// <summary>What <c>ptxas -v</c> reports for one function.</summary>
/// <param name="Name">mangled function name (<c>Kernel_MatVec</c>)</param>
/// <param name="IsEntry">a kernel entry point (<c>.entry</c>) rather than a called <c>.func</c></param>
/// <param name="Registers">registers per thread (entries only; -1 when not reported)</param>
/// <param name="StaticSharedBytes">static shared memory per block</param>
/// <param name="StackFrameBytes">per-thread stack frame (local memory)</param>
/// <param name="SpillStoreBytes">bytes of register spill stores</param>
/// <param name="SpillLoadBytes">bytes of register spill loads</param>
public sealed record PtxasFunction(string Name, bool IsEntry, int Registers, int StaticSharedBytes, int StackFrameBytes, int SpillStoreBytes, int SpillLoadBytes)
{
    /// <summary>Stack frame plus spill traffic: anything but zero means local memory.</summary>
    public int LocalMemoryBytes => StackFrameBytes + SpillStoreBytes + SpillLoadBytes;
}

/// <summary>Parser for the verbose output (stderr) of <c>ptxas -v</c> (CUDA 11.x format).</summary>
public static partial class PtxasLog
{
    [GeneratedRegex(@"Compiling entry function '([^']+)'")]
    private static partial Regex EntryLine();

    [GeneratedRegex(@"Function properties for (\S+)")]
    private static partial Regex PropertiesLine();

    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")]
    private static partial Regex StackLine();

    [GeneratedRegex(@"Used (\d+) registers")]
    private static partial Regex UsedLine();

    [GeneratedRegex(@"(\d+) bytes smem")]
    private static partial Regex SmemPart();

    [GeneratedRegex(@"ptxas\s+(fatal|error)\s*:.*")]
    private static partial Regex ErrorLine();

    /// <summary>Lines reporting a ptxas error (empty when it compiled).</summary>
    public static IReadOnlyList<string> Errors(string log) => ErrorLine().Matches(log).Select(m => m.Value.Trim()).ToList();

    /// <summary>Every function the log describes, entries first in log order.</summary>
    public static IReadOnlyList<PtxasFunction> Parse(string log)
    {
        var order = new List<string>();
        var entries = new HashSet<string>();
        var regs = new Dictionary<string, int>();
        var smem = new Dictionary<string, int>();
        var stack = new Dictionary<string, (int Frame, int Stores, int Loads)>();
        string? currentEntry = null;
        string? currentProperties = null;

        void See(string name)
        {
            if (!order.Contains(name))
                order.Add(name);
        }

        foreach (string raw in log.Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            Match m;
            if ((m = EntryLine().Match(line)).Success)
            {
                currentEntry = m.Groups[1].Value;
                entries.Add(currentEntry);
                See(currentEntry);
            }
            else if ((m = PropertiesLine().Match(line)).Success)
            {
                currentProperties = m.Groups[1].Value;
                See(currentProperties);
            }
            else if ((m = StackLine().Match(line)).Success && currentProperties is not null)
            {
                stack[currentProperties] = (Int(m.Groups[1]), Int(m.Groups[2]), Int(m.Groups[3]));
                currentProperties = null;
            }
            else if ((m = UsedLine().Match(line)).Success && currentEntry is not null)
            {
                regs[currentEntry] = Int(m.Groups[1]);
                var s = SmemPart().Match(line);
                smem[currentEntry] = s.Success ? Int(s.Groups[1]) : 0;
            }
        }

        return order
            .Select(n =>
            {
                var st = stack.GetValueOrDefault(n);
                return new PtxasFunction(n, entries.Contains(n), regs.GetValueOrDefault(n, -1), smem.GetValueOrDefault(n), st.Frame, st.Stores, st.Loads);
            })
            .OrderBy(f => f.IsEntry ? 0 : 1)
            .ToList();
    }

    static int Int(Group g) => int.Parse(g.Value, CultureInfo.InvariantCulture);
}
