using System.Net;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Model;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Log-probabilities (issue 22 item 1): the engine's against a float64 log-softmax of the golden
/// reference's float64 logits, the log-softmax itself against float64 on the same logits, and the
/// OpenAI shapes of completions (logprobs k) and chat (logprobs, top_logprobs), streamed or not.
/// </summary>
public sealed class LogprobsTests(DemoServer demo, ITestOutputHelper output) : IClassFixture<DemoServer>
{
    [Fact]
    public void The_log_softmax_is_float64s_on_the_same_logits_with_ties_broken_by_id()
    {
        var rng = new Random(5);
        var logits = Enumerable.Range(0, 1000).Select(_ => (float)(rng.NextDouble() * 20 - 10)).ToArray();
        logits[17] = logits[3] = 30f; // a tie at the top: the smaller id first
        var lp = TokenLogprobs.From(logits, 42, 5);
        var expected = Float64Oracle.LogSoftmax(logits);
        Assert.Equal(expected[42], lp.Logprob, 12);
        Assert.Equal([3, 17], lp.Top.Take(2).Select(t => t.Id));
        var order = Enumerable.Range(0, 1000).OrderByDescending(i => logits[i]).ThenBy(i => i).Take(5).ToArray();
        Assert.Equal(order, lp.Top.Select(t => t.Id));
        foreach (var (id, l) in lp.Top)
            Assert.Equal(expected[id], l, 12);
        Assert.Empty(TokenLogprobs.From(logits, 0, 0).Top);
    }

    [Fact]
    public async Task Engine_logprobs_are_the_float64_log_softmax_of_its_logits_and_track_the_golden_reference()
    {
        // The golden model (no tokenizer: token ids): each prefix of a case, one greedy token with its
        // logprob and the top 5. Against the float64 log-softmax of the very logits row the step produced
        // (read back once the request is done): equal within 1e-9. Against the golden float64 reference's
        // logits: within what the engine's logits themselves allow (fp16 KV cache: GoldenModelTests' tolerance).
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var model = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 64 });
        using var engine = LlamaEngine.FromModel(model, null);
        double worstOwn = 0, worstGolden = 0;
        var row = new float[model.Config.VocabSize];
        foreach (var c in GoldenFixture.Cases.Take(2))
        {
            for (int p = c.Prompt.Length; p < c.AllTokens.Length; p += 3)
            {
                var handle = engine.Submit(c.AllTokens[..p], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 1, Logprobs = 5, IgnoreEos = true });
                var r = await handle.Completion;
                await engine.Advanced.Scheduler.WhenIdleAsync();
                model.ReadLogitsRow(0, row);
                var lp = Assert.Single(r.Logprobs!);
                Assert.Equal(lp.Id, lp.Top[0].Id); // greedy takes the most likely
                var own = Float64Oracle.LogSoftmax(row);
                var golden = Float64Oracle.LogSoftmax(c.Row(p - 1));
                foreach (var (id, l) in lp.Top.Append((lp.Id, lp.Logprob)))
                {
                    worstOwn = Math.Max(worstOwn, Math.Abs(l - own[id]));
                    worstGolden = Math.Max(worstGolden, Math.Abs(l - golden[id]));
                }
            }
        }
        output.WriteLine($"max |logprob - float64 log-softmax of the step's logits| {worstOwn:G3}; of the golden reference's logits {worstGolden:G3} (logit tolerance {GoldenModelTests.LogitTolerance})");
        Assert.True(worstOwn < 1e-9, $"logprobs differ from the float64 log-softmax of their own logits by {worstOwn}");
        Assert.True(worstGolden < 2 * GoldenModelTests.LogitTolerance, $"logprobs differ from the golden reference by {worstGolden}");
    }

    static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");

    async Task<JsonElement> Post(string path, object body)
    {
        using var response = await demo.Http.PostAsync(path, Body(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    async Task<List<JsonElement>> Stream(string path, object body)
    {
        using var response = await demo.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = Body(body) }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<JsonElement>();
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line == "data: [DONE]")
                break;
            if (line.StartsWith("data: ", StringComparison.Ordinal))
                events.Add(JsonDocument.Parse(line[6..]).RootElement.Clone());
        }
        return events;
    }

    [Fact]
    public async Task Completions_return_openais_legacy_logprobs_streamed_or_not()
    {
        var body = new { prompt = "The quick brown", max_tokens = 6, temperature = 0, logprobs = 3, ignore_eos = true };
        var r = await Post("/v1/completions", body);
        var choice = r.GetProperty("choices")[0];
        var lp = choice.GetProperty("logprobs");
        var tokens = lp.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToArray();
        var logprobs = lp.GetProperty("token_logprobs").EnumerateArray().Select(t => t.GetDouble()).ToArray();
        var tops = lp.GetProperty("top_logprobs").EnumerateArray().ToArray();
        var offsets = lp.GetProperty("text_offset").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        Assert.Equal(6, tokens.Length);
        Assert.Equal(choice.GetProperty("text").GetString(), string.Concat(tokens));
        Assert.Equal(0, offsets[0]);
        for (int i = 0; i < tokens.Length; i++)
        {
            Assert.True(logprobs[i] <= 0);
            var top = tops[i].EnumerateObject().ToArray();
            Assert.InRange(top.Length, 1, 3);
            // Greedy: the chosen token is the most likely one.
            Assert.Equal(top[0].Value.GetDouble(), logprobs[i], 9);
            Assert.True(top.Zip(top.Skip(1)).All(p => p.First.Value.GetDouble() >= p.Second.Value.GetDouble()));
            if (i > 0)
                Assert.Equal(offsets[i - 1] + tokens[i - 1].Length, offsets[i]);
        }

        var events = await Stream("/v1/completions", new { prompt = "The quick brown", max_tokens = 6, temperature = 0, logprobs = 3, ignore_eos = true, stream = true });
        var streamed = events.Select(e => e.GetProperty("choices")[0]).Where(c => c.GetProperty("logprobs").ValueKind == JsonValueKind.Object).ToArray();
        Assert.Equal(6, streamed.Length);
        Assert.Equal(logprobs, streamed.Select(c => c.GetProperty("logprobs").GetProperty("token_logprobs")[0].GetDouble()));
    }

    [Fact]
    public async Task Chat_returns_logprobs_and_top_logprobs_with_bytes()
    {
        var r = await Post("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "Hello" } }, max_tokens = 5, temperature = 0, logprobs = true, top_logprobs = 2, ignore_eos = true });
        var choice = r.GetProperty("choices")[0];
        var content = choice.GetProperty("logprobs").GetProperty("content").EnumerateArray().ToArray();
        Assert.Equal(5, content.Length);
        foreach (var t in content)
        {
            Assert.True(t.GetProperty("logprob").GetDouble() <= 0);
            var bytes = t.GetProperty("bytes").EnumerateArray().Select(b => (byte)b.GetInt32()).ToArray();
            Assert.NotEmpty(bytes);
            var top = t.GetProperty("top_logprobs").EnumerateArray().ToArray();
            Assert.Equal(2, top.Length);
            Assert.Equal(top[0].GetProperty("logprob").GetDouble(), t.GetProperty("logprob").GetDouble(), 9);
        }
        // logprobs alone: no alternatives; streamed chunks carry their token's.
        var plain = await Post("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "Hello" } }, max_tokens = 3, temperature = 0, logprobs = true, ignore_eos = true });
        Assert.All(plain.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("content").EnumerateArray(), t => Assert.Empty(t.GetProperty("top_logprobs").EnumerateArray()));
        var events = await Stream("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "Hello" } }, max_tokens = 5, temperature = 0, logprobs = true, top_logprobs = 2, ignore_eos = true, stream = true });
        var streamed = events.Select(e => e.GetProperty("choices")[0].GetProperty("logprobs")).Where(l => l.ValueKind == JsonValueKind.Object).ToArray();
        Assert.Equal(content.Select(t => t.GetProperty("logprob").GetDouble()), streamed.Select(l => l.GetProperty("content")[0].GetProperty("logprob").GetDouble()));
        // Without logprobs the field stays null.
        var none = await Post("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "Hello" } }, max_tokens = 2 });
        Assert.Equal(JsonValueKind.Null, none.GetProperty("choices")[0].GetProperty("logprobs").ValueKind);
    }

    [Theory]
    [InlineData("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"top_logprobs\":2}", "top_logprobs", "needs logprobs")]
    [InlineData("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs", "0 to 20")]
    [InlineData("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"logprobs\":3}", "logprobs", "true or false")]
    [InlineData("/v1/completions", "{\"prompt\":\"Hi\",\"logprobs\":-1}", "logprobs", "0 to 20")]
    [InlineData("/v1/completions", "{\"prompt\":\"Hi\",\"logprobs\":true}", "logprobs", "whole number")]
    public async Task Bad_logprobs_are_a_400_naming_the_field(string path, string json, string param, string fragment)
    {
        using var response = await demo.Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var e = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal(param, e.GetProperty("param").GetString());
        Assert.Contains(fragment, e.GetProperty("message").GetString());
    }
}

/// <summary>n > 1 (issue 22 item 2): n choices with their indices, streamed or not, seeds derived from the request's.</summary>
public sealed class ChoicesTests(DemoServer demo) : IClassFixture<DemoServer>
{
    static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");

    [Fact]
    public async Task N_choices_come_back_indexed_with_their_own_samples_and_one_prompt_in_usage()
    {
        var body = new { prompt = "The quick brown", max_tokens = 8, temperature = 1.5, seed = 7, n = 3, ignore_eos = true };
        using var response = await demo.Http.PostAsync("/v1/completions", Body(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        var r = JsonDocument.Parse(text).RootElement;
        var choices = r.GetProperty("choices").EnumerateArray().ToArray();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        var texts = choices.Select(c => c.GetProperty("text").GetString()).ToArray();
        Assert.True(texts.Distinct().Count() > 1, "three samples at temperature 1.5 with derived seeds all equal");
        var usage = r.GetProperty("usage");
        Assert.Equal(24, usage.GetProperty("completion_tokens").GetInt32());
        int prompt = usage.GetProperty("prompt_tokens").GetInt32();
        Assert.Equal(prompt + 24, usage.GetProperty("total_tokens").GetInt32());

        // The same seed gives the same three choices, streamed: each chunk names its choice.
        using var stream = await demo.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Body(new { prompt = "The quick brown", max_tokens = 8, temperature = 1.5, seed = 7, n = 3, ignore_eos = true, stream = true }) },
            HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await stream.Content.ReadAsStreamAsync());
        var streamed = new StringBuilder[] { new(), new(), new() };
        var finished = new bool[3];
        while (await reader.ReadLineAsync() is { } line && line != "data: [DONE]")
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
                continue;
            var choice = JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0];
            int i = choice.GetProperty("index").GetInt32();
            streamed[i].Append(choice.GetProperty("text").GetString());
            finished[i] |= choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String;
        }
        Assert.All(finished, Assert.True);
        Assert.Equal(texts, streamed.Select(b => b.ToString()));
    }
}

/// <summary>usage.prompt_tokens_details.cached_tokens reports prefix reuse (issue 22 item 4).</summary>
public sealed class CachedTokensTests(DemoServer demo) : IClassFixture<DemoServer>
{
    [Fact]
    public async Task A_repeated_prompt_reports_its_cached_tokens()
    {
        int Cached(JsonElement r) => r.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32();
        var body = new { prompt = "Once upon a time there was a tiny model that", max_tokens = 2, temperature = 0 };
        var results = new List<JsonElement>();
        for (int i = 0; i < 3; i++)
        {
            using var response = await demo.Http.PostAsync("/v1/completions", new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"));
            results.Add(JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
        }
        int prompt = results[0].GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        // Once a slot holds the prompt, a repeat reuses all but its last token.
        Assert.Contains(results.Skip(1), r => Cached(r) == prompt - 1);
        Assert.All(results, r => Assert.InRange(Cached(r), 0, prompt - 1));
    }
}
