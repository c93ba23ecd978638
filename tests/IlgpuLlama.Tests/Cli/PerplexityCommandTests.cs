using System.Text.Json;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Tests.Model;
using IlgpuLlama.Text;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Cli;

/// <summary>
/// perplexity through the CLI on the demo model, against exp(mean NLL) computed here in float64 from
/// the float64 reference forward pass (over the fp16 values the engine holds), with llama-perplexity's
/// windows written out independently of the engine's planner.
/// </summary>
public sealed class PerplexityCommandTests(DemoModelDir demo, ITestOutputHelper output) : IClassFixture<DemoModelDir>
{
    const string LongText = "The quick brown fox jumps over the lazy dog. Once upon a time there was a model that wanted to tell a story.";
    const string ShortText = "Hello world, hello model.";

    /// <summary>llama-perplexity: windows of ctx tokens, BOS first, predictions from ctx/2 on scored; a text within one window scores all after BOS.</summary>
    static (double Ppl, int Scored) Reference(ReferenceForward model, IReadOnlyList<int> tokens, int ctx, int bos)
    {
        var windows = new List<(int[] Tokens, int First)>();
        if (tokens.Count <= ctx)
            windows.Add((tokens.ToArray(), 0));
        else
            for (int start = 0; start + ctx <= tokens.Count; start += ctx)
                windows.Add((tokens.Skip(start).Take(ctx).Select((t, i) => i == 0 ? bos : t).ToArray(), ctx / 2));
        double sum = 0;
        int scored = 0;
        foreach (var (w, first) in windows)
        {
            var logits = model.Logits(w);
            for (int pos = first; pos < w.Length - 1; pos++)
            {
                double max = logits[pos].Max();
                double logSum = max + Math.Log(logits[pos].Sum(l => Math.Exp(l - max)));
                sum += logSum - logits[pos][w[pos + 1]];
                scored++;
            }
        }
        return (Math.Exp(sum / scored), scored);
    }

    string WriteText(string text)
    {
        string path = Path.Combine(Path.GetDirectoryName(demo.Path)!, $"text-{Guid.NewGuid():N}.txt");
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void Windows_follow_llama_perplexity()
    {
        Assert.Equal([new PerplexityWindow(0, 10, 0)], Perplexity.Windows(10, 16));
        Assert.Equal(9, Perplexity.Windows(10, 16)[0].Scored);
        var windows = Perplexity.Windows(50, 16);
        Assert.Equal([new PerplexityWindow(0, 16, 8), new PerplexityWindow(16, 16, 8), new PerplexityWindow(32, 16, 8)], windows);
        Assert.All(windows, w => Assert.Equal(7, w.Scored));
        Assert.Throws<EngineArgumentException>(() => Perplexity.Windows(1, 16));
        Assert.Throws<EngineArgumentException>(() => Perplexity.Windows(10, 1));
    }

    [Fact]
    public void Windowed_perplexity_equals_a_float64_reference_within_half_a_percent()
    {
        var tokenizer = LlamaTokenizer.FromDirectory(demo.Path);
        var tokens = tokenizer.Encode(LongText, addBos: true);
        const int ctx = 12;
        Assert.True(tokens.Count >= 3 * ctx, $"the premise: at least three windows ({tokens.Count} tokens)");
        var (expected, scored) = Reference(new ReferenceForward(demo.Path, WeightFormat.Fp16), tokens, ctx, tokenizer.BosId);

        // Two slots: the windows run two at a time, the last pass with one.
        var r = CliHarness.Run("perplexity", "--model", demo.Path, "--file", WriteText(LongText), "--ctx", $"{ctx}", "--max-batch-size", "2", "--device", "cpu", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        double ppl = root.GetProperty("perplexity").GetDouble();
        output.WriteLine($"engine {ppl:G8}, float64 reference {expected:G8} over {scored} tokens ({(ppl / expected - 1) * 100:F4} %)");
        Assert.Equal(scored, root.GetProperty("tokens_scored").GetInt32());
        Assert.Equal(tokens.Count / ctx, root.GetProperty("windows").GetInt32());
        Assert.Equal(Math.Exp(root.GetProperty("nll_mean").GetDouble()), ppl, 1e-9 * ppl);
        Assert.True(Math.Abs(ppl / expected - 1) <= 0.005, $"perplexity {ppl} vs float64 reference {expected}");
        // The progress bar: a rate on every line, the last one complete.
        var bar = r.Err.Split('\n').Where(l => l.StartsWith('[')).ToArray();
        Assert.NotEmpty(bar);
        Assert.All(bar, l => Assert.Contains("tok/s", l));
        Assert.Contains($"{(tokens.Count / ctx) * ctx} / {(tokens.Count / ctx) * ctx} tokens", bar[^1]);
    }

    /// <summary>
    /// The bar appears before any work and advances every piece of PiecePositions positions, not once
    /// per pass of windows (issue 23: three windows of 512 on the CPU showed nothing for 10 minutes).
    /// </summary>
    [Fact]
    public void Progress_appears_at_once_and_advances_every_piece()
    {
        var tokenizer = LlamaTokenizer.FromDirectory(demo.Path);
        var tokens = tokenizer.Encode(string.Concat(Enumerable.Repeat(LongText, 12)), addBos: true);
        const int ctx = 300;
        Assert.True(tokens.Count >= ctx, $"the premise: one window of {ctx} ({tokens.Count} tokens)");
        using var device = IlgpuLlama.Device.ComputeDevice.Create(IlgpuLlama.Device.DeviceKind.Cpu);
        using var model = LlamaModel.Load(device, demo.Path, new EngineOptions { MaxBatchSize = 1, MaxSeqLen = ctx });
        var reports = new List<PerplexityProgress>();
        var result = Perplexity.Score(model, tokens.Take(ctx).ToArray(), ctx, tokenizer.BosId, new SyncReports(reports));
        int pieces = (ctx + Perplexity.PiecePositions - 1) / Perplexity.PiecePositions;
        Assert.Equal(1 + pieces, reports.Count);
        Assert.Equal(0, reports[0].TokensDone);
        Assert.Equal(Enumerable.Range(1, pieces).Select(i => (long)Math.Min(i * Perplexity.PiecePositions, ctx)), reports.Skip(1).Select(p => p.TokensDone));
        Assert.Equal(1, reports[^1].WindowsDone);
        Assert.Equal(ctx - 1, result.TokensScored);
        // Prefilled piece by piece, continuing in the cache: still the float64 reference's perplexity.
        var (expected, _) = Reference(new ReferenceForward(demo.Path, WeightFormat.Fp16), tokens.Take(ctx).ToArray(), ctx, tokenizer.BosId);
        Assert.True(Math.Abs(result.Perplexity / expected - 1) <= 0.005, $"perplexity {result.Perplexity} vs float64 reference {expected}");
    }

    sealed class SyncReports(List<PerplexityProgress> list) : IProgress<PerplexityProgress>
    {
        public void Report(PerplexityProgress value) => list.Add(value);
    }

    [Fact]
    public void A_text_within_one_window_scores_every_token_after_bos()
    {
        var tokenizer = LlamaTokenizer.FromDirectory(demo.Path);
        var tokens = tokenizer.Encode(ShortText, addBos: true);
        var (expected, scored) = Reference(new ReferenceForward(demo.Path, WeightFormat.Fp16), tokens, 64, tokenizer.BosId);
        Assert.Equal(tokens.Count - 1, scored);

        var r = CliHarness.Run("perplexity", "--model", demo.Path, "--file", WriteText(ShortText), "--device", "cpu");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.StartsWith("perplexity ", r.Out);
        Assert.Contains($"over {tokens.Count - 1} tokens, 1 window(s) of {tokens.Count}", r.Out);
        Assert.Contains("every token after BOS scored", r.Err);
        double ppl = double.Parse(r.Out.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(Math.Abs(ppl / expected - 1) <= 0.005, $"perplexity {ppl} vs float64 reference {expected}");
    }

    [Fact]
    public void A_window_longer_than_the_cache_is_one_error_naming_the_flags()
    {
        var r = CliHarness.Run("perplexity", "--model", demo.Path, "--file", WriteText(LongText), "--ctx", "64", "--max-seq-len", "32", "--device", "cpu");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("error: --ctx 64 exceeds --max-seq-len 32; lower --ctx or raise --max-seq-len", r.Err.Trim());
    }
}
