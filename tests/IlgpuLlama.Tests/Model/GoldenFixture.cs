using System.Text.Json;
using IlgpuLlama.IO;

namespace IlgpuLlama.Tests.Model;

/// <summary>The tiny-llama3 golden data: a model and float64 PyTorch reference outputs.</summary>
public static class GoldenFixture
{
    public sealed record Case(int[] Prompt, int[] Greedy16, double[] Margins, float[] Logits, long[] Shape)
    {
        public int[] AllTokens => [.. Prompt, .. Greedy16];

        public ReadOnlySpan<float> Row(int t) => Logits.AsSpan(t * (int)Shape[1], (int)Shape[1]);
    }

    public static string Directory { get; } = FindFixture();

    static string FindFixture()
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null)
        {
            var candidate = Path.Combine(dir, "tests", "fixtures", "tiny-llama3");
            if (File.Exists(Path.Combine(candidate, "golden.json")))
                return candidate;
            dir = Path.GetDirectoryName(dir);
        }
        throw new DirectoryNotFoundException("tests/fixtures/tiny-llama3 not found above " + AppContext.BaseDirectory);
    }

    public static IReadOnlyList<Case> Cases { get; } = Load();

    static List<Case> Load()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Directory, "golden.json")));
        var list = new List<Case>();
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var (data, shape) = NpyFile.Read(Path.Combine(Directory, c.GetProperty("logits_file").GetString()!));
            list.Add(new Case(
                c.GetProperty("prompt").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("greedy_16").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("greedy_margins").EnumerateArray().Select(e => e.GetDouble()).ToArray(),
                data, shape));
        }
        return list;
    }
}
