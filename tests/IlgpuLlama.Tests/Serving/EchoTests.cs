using System.Net;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Engine.Serving;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Issue 22 item 1: completions <c>echo</c> with logprobs for the prompt tokens (what evaluation
/// harnesses score choices with), through the HTTP API on the demo model, equal to the engine's own
/// prompt log-probabilities (<see cref="GenerationSettings.PromptLogprobs"/>, tested against the float64
/// reference in PromptLogprobsTests).
/// </summary>
public sealed class EchoTests(DemoServer demo) : IClassFixture<DemoServer>
{
    const string Prompt = "The quick brown fox";

    static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");

    async Task<JsonElement> Post(object body)
    {
        using var response = await demo.Http.PostAsync("v1/completions", Body(body));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    [Fact]
    public async Task Echo_returns_the_prompt_and_its_token_logprobs_before_the_completion()
    {
        var plain = await Post(new { prompt = Prompt, max_tokens = 3, temperature = 0, ignore_eos = true });
        var r = await Post(new { prompt = Prompt, max_tokens = 3, temperature = 0, ignore_eos = true, echo = true, logprobs = 2 });
        var choice = r.GetProperty("choices")[0];
        string completion = plain.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.Equal(Prompt + completion, choice.GetProperty("text").GetString());

        // The prompt's tokens (BOS left out) then the completion's, with offsets into the echoed text.
        var prompt = demo.Engine.Encode(Prompt);
        var lp = choice.GetProperty("logprobs");
        var tokens = lp.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToArray();
        Assert.Equal(prompt.Count - 1 + 3, tokens.Length);
        Assert.Equal(Prompt, string.Concat(tokens.Take(prompt.Count - 1)));
        var offsets = lp.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()).ToArray();
        for (int i = 1; i < offsets.Length; i++)
            Assert.Equal(offsets[i - 1] + tokens[i - 1].Length, offsets[i]);

        // Equal to the engine's prompt logprobs for the same request.
        var handle = demo.Engine.Submit(prompt, new GenerationSettings { MaxNewTokens = 1, Sampling = IlgpuLlama.Sampling.SamplingOptions.Greedy, PromptLogprobs = 2 });
        var expected = (await handle.Completion).PromptLogprobs!;
        var got = lp.GetProperty("token_logprobs").EnumerateArray().ToArray();
        var top = lp.GetProperty("top_logprobs").EnumerateArray().ToArray();
        for (int i = 1; i < prompt.Count; i++)
        {
            Assert.Equal(expected[i]!.Logprob, got[i - 1].GetDouble(), 12);
            Assert.Equal(2, top[i - 1].EnumerateObject().Count());
        }
        Assert.All(got, g => Assert.True(g.GetDouble() <= 0));
    }

    [Fact]
    public async Task Echo_with_max_tokens_0_is_the_prompt_alone()
    {
        var r = await Post(new { prompt = Prompt, max_tokens = 0, echo = true, logprobs = 0 });
        var choice = r.GetProperty("choices")[0];
        Assert.Equal(Prompt, choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(0, r.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(demo.Engine.Encode(Prompt).Count - 1, choice.GetProperty("logprobs").GetProperty("tokens").GetArrayLength());

        // Without echo, max_tokens 0 is still refused.
        using var refused = await demo.Http.PostAsync("v1/completions", Body(new { prompt = Prompt, max_tokens = 0 }));
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
    }

    [Fact]
    public async Task A_streamed_echo_opens_with_the_prompt_and_adds_up_to_the_whole_text()
    {
        var whole = await Post(new { prompt = Prompt, max_tokens = 4, temperature = 0, ignore_eos = true, echo = true, logprobs = 1 });
        using var response = await demo.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/completions")
        {
            Content = Body(new { prompt = Prompt, max_tokens = 4, temperature = 0, ignore_eos = true, echo = true, logprobs = 1, stream = true }),
        }, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var texts = new List<string>();
        var tokenCount = 0;
        while (await reader.ReadLineAsync() is { } line && line != "data: [DONE]")
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
                continue;
            var choice = JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0];
            texts.Add(choice.GetProperty("text").GetString()!);
            if (choice.GetProperty("logprobs") is { ValueKind: JsonValueKind.Object } lp)
                tokenCount += lp.GetProperty("tokens").GetArrayLength();
        }
        Assert.Equal(Prompt, texts[0]);
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), string.Concat(texts));
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("tokens").GetArrayLength(), tokenCount);
    }

    [Fact]
    public async Task Echo_without_logprobs_is_text_only()
    {
        var r = await Post(new { prompt = Prompt, max_tokens = 2, temperature = 0, echo = true });
        var choice = r.GetProperty("choices")[0];
        Assert.StartsWith(Prompt, choice.GetProperty("text").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
    }

    [Fact]
    public async Task Offsets_stay_in_the_text_when_tokens_split_characters()
    {
        const string text = "日本語のテキスト😀 ok";
        var r = await Post(new { prompt = text, max_tokens = 2, temperature = 0, ignore_eos = true, echo = true, logprobs = 0 });
        var choice = r.GetProperty("choices")[0];
        string whole = choice.GetProperty("text").GetString()!;
        Assert.StartsWith(text, whole);
        var offsets = choice.GetProperty("logprobs").GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()).ToArray();
        Assert.Equal(0, offsets[0]);
        for (int i = 1; i < offsets.Length; i++)
            Assert.InRange(offsets[i], offsets[i - 1], whole.Length);
        // The completion's first token starts where the echoed prompt ends.
        Assert.Equal(text.Length, offsets[demo.Engine.Encode(text).Count - 1]);
    }
}
