using System.Text.RegularExpressions;

namespace IlgpuLlama.Tests.Architecture;

/// <summary>
/// The dependency picture in docs/architecture.md is the code's: every namespace of src/ and
/// kernels/ and every <c>using</c> between them, read from the sources (nothing hard-coded here),
/// must be exactly the nodes and edges of the doc's mermaid graph, and the graph has no cycle.
/// </summary>
public sealed partial class DependencyTests
{
    [GeneratedRegex(@"^namespace (IlgpuLlama[\w.]*)\s*;", RegexOptions.Multiline)]
    private static partial Regex NamespaceLine();

    [GeneratedRegex(@"^(?:global )?using (IlgpuLlama[\w.]*)\s*;", RegexOptions.Multiline)]
    private static partial Regex UsingLine();

    [GeneratedRegex(@"^\s*(\w+)\[""([\w.()]+)""\]", RegexOptions.Multiline)]
    private static partial Regex MermaidNode();

    [GeneratedRegex(@"^\s*(\w+)\s*-->\s*(\w+)\s*$", RegexOptions.Multiline)]
    private static partial Regex MermaidEdge();

    static string Root => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../.."));

    /// <summary>Namespace -> namespaces its files import, over the shipped projects' sources.</summary>
    internal static SortedDictionary<string, SortedSet<string>> CodeGraph()
    {
        var graph = new SortedDictionary<string, SortedSet<string>>(StringComparer.Ordinal);
        foreach (var dir in new[] { "src", "kernels" })
        {
            foreach (var file in Directory.EnumerateFiles(Path.Combine(Root, dir), "*.cs", SearchOption.AllDirectories))
            {
                if (file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") || file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
                    continue;
                string text = File.ReadAllText(file);
                var ns = NamespaceLine().Match(text);
                if (!ns.Success)
                    continue;
                string from = Short(ns.Groups[1].Value);
                if (!graph.TryGetValue(from, out var uses))
                    graph[from] = uses = new SortedSet<string>(StringComparer.Ordinal);
                foreach (Match u in UsingLine().Matches(text))
                    if (Short(u.Groups[1].Value) is var to && to != from)
                        uses.Add(to);
            }
        }
        return graph;
    }

    static string Short(string ns) => ns == "IlgpuLlama" ? "(root)" : ns["IlgpuLlama.".Length..];

    static (SortedSet<string> Nodes, SortedSet<(string, string)> Edges) DocGraph()
    {
        string doc = File.ReadAllText(Path.Combine(Root, "docs", "architecture.md"));
        int start = doc.IndexOf("```mermaid", StringComparison.Ordinal);
        Assert.True(start >= 0, "docs/architecture.md has no mermaid dependency graph");
        int end = doc.IndexOf("```", start + 10, StringComparison.Ordinal);
        string block = doc[start..end];
        var names = MermaidNode().Matches(block).ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
        var edges = new SortedSet<(string, string)>();
        foreach (Match e in MermaidEdge().Matches(block))
        {
            Assert.True(names.ContainsKey(e.Groups[1].Value) && names.ContainsKey(e.Groups[2].Value), $"the doc's edge {e.Value.Trim()} names an undeclared node");
            edges.Add((names[e.Groups[1].Value], names[e.Groups[2].Value]));
        }
        return (new SortedSet<string>(names.Values, StringComparer.Ordinal), edges);
    }

    [Fact]
    public void The_documented_dependency_graph_is_the_code_s()
    {
        var code = CodeGraph();
        var (docNodes, docEdges) = DocGraph();
        var codeEdges = new SortedSet<(string, string)>(code.SelectMany(kv => kv.Value.Select(to => (kv.Key, to))));
        string Listing() => "the code's graph (paste into docs/architecture.md):\n" + string.Join("\n", codeEdges.Select(e => $"  {e.Item1} --> {e.Item2}"));
        Assert.True(docNodes.SetEquals(code.Keys), $"namespaces: doc has [{string.Join(", ", docNodes.Except(code.Keys))}] the code lacks; code has [{string.Join(", ", code.Keys.Except(docNodes))}] the doc lacks");
        var undocumented = codeEdges.Except(docEdges).ToList();
        var stale = docEdges.Except(codeEdges).ToList();
        Assert.True(undocumented.Count == 0 && stale.Count == 0,
            $"undocumented: {string.Join(", ", undocumented)}; documented but gone: {string.Join(", ", stale)}\n{Listing()}");
    }

    [Fact]
    public void The_namespaces_form_no_cycle()
    {
        var code = CodeGraph();
        var state = new Dictionary<string, int>();
        var path = new List<string>();
        void Visit(string n)
        {
            state[n] = 1;
            path.Add(n);
            foreach (var m in code.GetValueOrDefault(n) ?? [])
            {
                if (state.GetValueOrDefault(m) == 1)
                    Assert.Fail($"a dependency cycle: {string.Join(" -> ", path.SkipWhile(x => x != m))} -> {m}");
                if (state.GetValueOrDefault(m) == 0)
                    Visit(m);
            }
            path.RemoveAt(path.Count - 1);
            state[n] = 2;
        }
        foreach (var n in code.Keys)
            if (state.GetValueOrDefault(n) == 0)
                Visit(n);
    }

    [Fact]
    public void The_kernels_and_the_engine_never_import_the_command_line()
    {
        foreach (var (from, uses) in CodeGraph())
            if (!from.StartsWith("Cli", StringComparison.Ordinal))
                Assert.DoesNotContain(uses, u => u.StartsWith("Cli", StringComparison.Ordinal));
    }
}
