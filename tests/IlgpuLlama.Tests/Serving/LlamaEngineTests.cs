using System.CommandLine;
using IlgpuLlama.Cli.Commands;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Engine;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Serving;

/// <summary>The library facade on the demo model (it has a tokenizer, so text, chat and stop strings work).</summary>
public sealed class DemoEngine : IDisposable
{
    readonly DemoModelDir dir = new();

    public DemoEngine() => Engine = LlamaEngine.Load(dir.Path, new LlamaEngineOptions { Device = DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 128 } });

    public LlamaEngine Engine { get; }

    public string Directory => dir.Path;

    public void Dispose()
    {
        Engine.Dispose();
        dir.Dispose();
    }
}

public sealed class LlamaEngineTests(DemoEngine demo) : IClassFixture<DemoEngine>
{
    static readonly GenerationSettings Greedy = new() { MaxNewTokens = 12, Sampling = SamplingOptions.Greedy, IgnoreEos = true };

    static async Task<(string Text, List<GeneratedToken> Tokens)> Collect(IAsyncEnumerable<GeneratedToken> stream)
    {
        var tokens = new List<GeneratedToken>();
        await foreach (var t in stream)
            tokens.Add(t);
        return (string.Concat(tokens.Select(t => t.Text)), tokens);
    }

    [Fact]
    public async Task Streamed_text_equals_the_finished_result_and_the_tokenizer_decode()
    {
        var engine = demo.Engine;
        var (text, tokens) = await Collect(engine.GenerateAsync("The quick brown fox", Greedy));
        var result = await engine.GenerateTextAsync("The quick brown fox", Greedy);
        Assert.Equal(result.GeneratedTokens, tokens.Select(t => t.Id));
        Assert.Equal(result.Text, text);
        Assert.Equal(engine.Tokenizer!.Decode(result.GeneratedTokens, includeSpecial: false), text);
        Assert.Equal(FinishReason.Length, tokens[^1].FinishReason);
        Assert.All(tokens[..^1], t => Assert.Null(t.FinishReason));
        Assert.Equal(Enumerable.Range(0, 12), tokens.Select(t => t.Index));
    }

    [Fact]
    public async Task A_stop_string_ends_the_text_before_it()
    {
        var engine = demo.Engine;
        var full = await engine.GenerateTextAsync("Hello world", Greedy with { MaxNewTokens = 20 });
        Assert.True(full.Text!.Length > 6, full.Text);
        string stop = full.Text.Substring(3, 2);
        var (text, tokens) = await Collect(engine.GenerateAsync("Hello world", Greedy with { MaxNewTokens = 20, StopStrings = [stop] }));
        Assert.Equal(full.Text[..full.Text.IndexOf(stop, StringComparison.Ordinal)], text);
        Assert.Equal(FinishReason.Stop, tokens[^1].FinishReason);
        Assert.True(tokens.Count < 20);
    }

    [Fact]
    public async Task Chat_messages_use_the_llama_3_template()
    {
        var engine = demo.Engine;
        ChatMessage[] messages = [new("system", "Be brief."), new("user", "Hi!")];
        var (text, _) = await Collect(engine.GenerateAsync(messages, Greedy, CancellationToken.None));
        var ids = ChatTemplate.Encode(engine.Tokenizer!, messages, addGenerationPrompt: true);
        var (sameText, _) = await Collect(engine.GenerateAsync(ids, Greedy));
        Assert.Equal(sameText, text);
        Assert.Equal(ids, engine.EncodeChat(messages));
    }

    [Fact]
    public async Task Cancelling_the_token_or_leaving_the_loop_frees_the_slot()
    {
        var engine = demo.Engine;
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var t in engine.GenerateAsync("Once upon", Greedy with { MaxNewTokens = 100 }, cts.Token))
                if (++seen == 2)
                    cts.Cancel();
        });
        Assert.Equal(2, seen);
        await foreach (var t in engine.GenerateAsync("Once upon", Greedy with { MaxNewTokens = 100 }))
            break;
        await engine.Advanced.Scheduler.WhenIdleAsync().WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(0, engine.Advanced.Scheduler.RunningCount);
    }

    [Fact]
    public void Bad_requests_throw_when_generation_is_asked_for()
    {
        var e = Assert.Throws<EngineArgumentException>(() => demo.Engine.GenerateAsync("hi", Greedy with { MaxNewTokens = 500 }));
        Assert.Contains("exceeds MaxSeqLen 128", e.Message);
        e = Assert.Throws<EngineArgumentException>(() => demo.Engine.GenerateAsync("hi", Greedy with { Sampling = new SamplingOptions { TopP = 2 } }));
        Assert.Contains("TopP", e.Message);
    }

    [Fact]
    public void The_library_defaults_are_the_command_lines()
    {
        var parse = GenerateCommand.Create().Parse(["--prompt", "x"]);
        var settings = new GenerationSettings();
        Assert.Equal(parse.GetValue<int>("--max-new-tokens"), settings.MaxNewTokens);
        Assert.Equal(parse.GetValue<float>("--temperature"), settings.Sampling.Temperature);
        Assert.Equal(parse.GetValue<int>("--top-k"), settings.Sampling.TopK);
        Assert.Equal(parse.GetValue<float>("--top-p"), settings.Sampling.TopP);
        Assert.Equal(parse.GetValue<float>("--min-p"), settings.Sampling.MinP);
        Assert.Equal(parse.GetValue<float>("--repetition-penalty"), settings.Sampling.RepetitionPenalty);
        Assert.False(settings.Sampling.IsGreedy);
        Assert.False(settings.IgnoreEos);
        var engine = new LlamaEngineOptions().Engine;
        Assert.Equal(parse.GetValue<int>("--max-batch-size"), engine.MaxBatchSize);
        Assert.Equal(parse.GetValue<int?>("--max-seq-len"), engine.MaxSeqLen); // both: the longest context that fits
        // The stop set: the model's end-of-sequence ids and the tokenizer's end-of-turn ids.
        Assert.Superset(new HashSet<int>(demo.Engine.Advanced.Model.Config.EosTokenIds.Concat(demo.Engine.Tokenizer!.StopIds)), new HashSet<int>(demo.Engine.EndOfSequenceTokens));
        Assert.Subset(new HashSet<int>(demo.Engine.Advanced.Model.Config.EosTokenIds.Concat(demo.Engine.Tokenizer!.StopIds)), new HashSet<int>(demo.Engine.EndOfSequenceTokens));
    }
}
