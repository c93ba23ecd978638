using IlgpuLlama.Constraints;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Cli;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Constraints;

/// <summary>The demo model (random weights) behind the engine facade, with 8 KV slots so that many constrained requests share each step.</summary>
public sealed class StructuredDemoEngine : IDisposable
{
    readonly DemoModelDir dir = new();

    public StructuredDemoEngine() =>
        Engine = LlamaEngine.Load(dir.Path, new LlamaEngineOptions { Device = DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 8, MaxSeqLen = 160 } });

    public LlamaEngine Engine { get; }

    public void Dispose()
    {
        Engine.Dispose();
        dir.Dispose();
    }
}

/// <summary>Structured output through the engine: every text parses and validates (JsonSchema.Net), whatever the random model prefers.</summary>
public sealed class StructuredOutputEngineTests(StructuredDemoEngine demo, ITestOutputHelper output) : IClassFixture<StructuredDemoEngine>
{
    static readonly SamplingOptions Random1 = new() { Temperature = 1f, TopK = 0, TopP = 1f };

    static GenerationSettings Settings(JsonGrammar grammar, int maxTokens, SamplingOptions sampling) =>
        new() { ResponseFormat = grammar, MaxNewTokens = maxTokens, Sampling = sampling };

    [Fact]
    public async Task Hundred_json_schema_completions_over_ten_schemas_all_parse_and_validate()
    {
        var engine = demo.Engine;
        var prompt = engine.Encode("Answer in JSON:");
        var requests = new List<(string Schema, ScheduledRequest Handle)>();
        for (int i = 0; i < 100; i++)
        {
            string schema = TokenMaskTests.Schemas[i % 10];
            var grammar = JsonGrammar.FromSchema(schema);
            // Room to wander past the shortest text, then the termination rule closes it.
            int maxTokens = grammar.MinBytes + 8 + i % 24;
            var sampling = Random1 with { Seed = (ulong)(1000 + i), RepetitionPenalty = i % 5 == 0 ? 1.3f : 1f, MinP = i % 7 == 0 ? 0.05f : 0f };
            requests.Add((schema, engine.Submit(prompt, Settings(grammar, maxTokens, sampling))));
        }
        int length = 0;
        foreach (var (schema, handle) in requests)
        {
            var result = await handle.Completion;
            JsonOracle.AssertValid(schema, result.Text!);
            Assert.Equal(result.GeneratedTokens.Count, result.MaskSteps);
            if (result.FinishReason == FinishReason.Length)
                length++;
        }
        var stats = engine.Advanced.Scheduler.Stats;
        output.WriteLine($"{length} of 100 ended at the token limit; mask {stats.MaskMillisecondsPerStep:F3} ms/step over {stats.MaskSteps} steps");
        output.WriteLine((await requests[0].Handle.Completion).Text);
        Assert.True(stats.MaskSteps > 0);
    }

    [Fact]
    public async Task Json_object_completions_parse_as_objects()
    {
        var engine = demo.Engine;
        Assert.True(TokenTrie.For(engine.Tokenizer!).EveryByteIsAToken); // the termination rule's assumption holds for the demo's vocabulary
        var handles = Enumerable.Range(0, 10)
            .Select(i => engine.Submit(engine.Encode("{"), Settings(JsonGrammar.AnyObject, 12 + 3 * i, Random1 with { Seed = (ulong)i })))
            .ToArray();
        foreach (var h in handles)
            JsonOracle.AssertValid(null, (await h.Completion).Text!);
    }

    [Fact]
    public async Task The_tightest_token_limit_still_gives_complete_json()
    {
        var engine = demo.Engine;
        foreach (var schema in TokenMaskTests.Schemas)
        {
            var grammar = JsonGrammar.FromSchema(schema);
            foreach (int extra in new[] { 0, 1, 2 })
            {
                var result = await engine.GenerateTextAsync("JSON please", Settings(grammar, grammar.MinBytes + extra, Random1 with { Seed = (ulong)extra }));
                JsonOracle.AssertValid(schema, result.Text!);
            }
        }
    }

    [Fact]
    public async Task Greedy_streams_and_sampling_streams_of_one_seed_are_constrained_too()
    {
        var engine = demo.Engine;
        string schema = TokenMaskTests.Schemas[1];
        var grammar = JsonGrammar.FromSchema(schema);
        var greedy = Settings(grammar, 40, SamplingOptions.Greedy);
        var first = await engine.GenerateTextAsync("Hello", greedy);
        var second = await engine.GenerateTextAsync("Hello", greedy);
        Assert.Equal(first.GeneratedTokens, second.GeneratedTokens);
        JsonOracle.AssertValid(schema, first.Text!);

        // n choices: one seed, one stream each (as the server does for n > 1).
        var choices = Enumerable.Range(0, 4)
            .Select(i => engine.Submit(engine.Encode("Hello"), Settings(grammar, 40, Random1 with { Seed = 42 }) with { SamplingStream = i }))
            .ToArray();
        var texts = new List<string>();
        foreach (var c in choices)
        {
            var text = (await c.Completion).Text!;
            JsonOracle.AssertValid(schema, text);
            texts.Add(text);
        }
        Assert.True(texts.Distinct().Count() > 1);

        // Streamed pieces add up to the text.
        var streamed = new List<string>();
        await foreach (var token in engine.GenerateAsync("Hello", greedy))
            streamed.Add(token.Text);
        Assert.Equal(first.Text, string.Concat(streamed));
    }

    [Fact]
    public async Task A_stop_token_that_is_an_ordinary_token_waits_until_the_json_is_complete()
    {
        var engine = demo.Engine;
        var tok = engine.Tokenizer!;
        // Merged (multi-byte) tokens, so every byte stays a token of its own.
        int[] stops = [.. Enumerable.Range(256, 256).Where(id => tok.TokenBytes(id).Length > 1 && tok.TokenBytes(id).Any(b => b is (byte)'"' or (byte)'}' or (byte)' ')).Take(8)];
        Assert.NotEmpty(stops);
        string schema = TokenMaskTests.Schemas[0];
        var grammar = JsonGrammar.FromSchema(schema);
        for (int seed = 0; seed < 4; seed++)
        {
            var result = await engine.GenerateTextAsync("x", Settings(grammar, 60, Random1 with { Seed = (ulong)seed }) with { StopTokens = stops });
            JsonOracle.AssertValid(schema, result.Text!);
        }
    }

    [Fact]
    public async Task A_constrained_request_gives_the_same_tokens_alone_and_beside_others()
    {
        // Alone its mask runs on the scheduler thread; beside other constrained requests the masks of a
        // step run in parallel.
        var engine = demo.Engine;
        var grammar = JsonGrammar.FromSchema(TokenMaskTests.Schemas[0]);
        var settings = Settings(grammar, 40, Random1 with { Seed = 77 });
        var prompt = engine.Encode("Same tokens");
        // Pinned slots: no prefix reuse, so both runs prefill the whole prompt.
        var alone = await engine.Advanced.Scheduler.Submit(new GenerationRequest { PromptTokens = prompt, Settings = settings, Slot = 7 }).Completion;
        var together = Enumerable.Range(0, 4)
            .Select(i => engine.Advanced.Scheduler.Submit(new GenerationRequest
            {
                PromptTokens = prompt,
                Settings = i == 0 ? settings : settings with { Sampling = Random1 with { Seed = (ulong)i } },
                Slot = i,
            }))
            .ToArray();
        Assert.Equal(alone.GeneratedTokens, (await together[0].Completion).GeneratedTokens);
        foreach (var t in together)
            JsonOracle.AssertValid(TokenMaskTests.Schemas[0], (await t.Completion).Text!);
    }

    [Fact]
    public async Task Logprobs_are_those_of_the_unmasked_logits()
    {
        var engine = demo.Engine;
        string schema = TokenMaskTests.Schemas[4];
        var grammar = JsonGrammar.FromSchema(schema);
        var result = await engine.GenerateTextAsync("x", Settings(grammar, 30, SamplingOptions.Greedy) with { Logprobs = 3 });
        JsonOracle.AssertValid(schema, result.Text!);
        Assert.Equal(result.GeneratedTokens, result.Logprobs!.Select(l => l.Id));
        // The first token must be "{"; the unmasked distribution's favourites need not be.
        var first = result.Logprobs![0];
        Assert.Equal("{", engine.Tokenizer!.TokenString(first.Id));
        Assert.True(first.Top[0].Logprob >= first.Logprob);
        Assert.True(result.Logprobs!.Any(l => l.Top[0].Id != l.Id), "the mask never changed the argmax: the logprobs may be masked ones");
    }

    [Fact]
    public void Requests_that_cannot_be_constrained_are_refused()
    {
        var engine = demo.Engine;
        var grammar = JsonGrammar.FromSchema(TokenMaskTests.Schemas[0]);
        var prompt = engine.Encode("x");
        var tooShort = Assert.Throws<EngineArgumentException>(() => engine.Submit(prompt, Settings(grammar, grammar.MinBytes - 1, Random1)));
        Assert.Contains($"its shortest JSON text has {grammar.MinBytes} bytes", tooShort.Message);
        Assert.Throws<EngineArgumentException>(() => engine.Submit(prompt, Settings(grammar, 64, Random1) with { IgnoreEos = true }));
        // Without a tokenizer there are no token bytes to mask with.
        var generator = new Generator(engine.Advanced.Model);
        Assert.Throws<EngineArgumentException>(() => generator.Generate([prompt], Settings(grammar, 64, Random1)));
    }
}
