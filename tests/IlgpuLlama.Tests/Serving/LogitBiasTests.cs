using System.Net;
using System.Text;
using System.Text.Json;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// OpenAI's <c>logit_bias</c> (token id to a bias from -100 to 100) on both endpoints: +100 forces a
/// token, -100 bans one, the logprobs stay the model's, and bad maps are a 400 naming the field.
/// </summary>
public sealed class LogitBiasTests(DemoServer demo) : IClassFixture<DemoServer>
{
    static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    /// <summary>A logit_bias object of one entry.</summary>
    internal static string Bias(int id, int value) => $"{{\"{id}\": {value}}}";

    int Id(string text) => Assert.Single(demo.Engine.Tokenizer!.Encode(text, addBos: false));

    async Task<JsonElement> Complete(string json)
    {
        using var response = await demo.Http.PostAsync("v1/completions", Body(json));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].Clone();
    }

    [Fact]
    public async Task A_bias_of_100_forces_a_token_and_minus_100_bans_the_greedy_one()
    {
        int z = Id("Z");
        var forced = await Complete($$"""{"prompt": "hello", "max_tokens": 5, "temperature": 0, "logit_bias": {{Bias(z, 100)}}, "logprobs": 0}""");
        Assert.Equal("ZZZZZ", forced.GetProperty("text").GetString());
        // The logprobs are the model's own, not the biased row's (which would give Z a logprob of ~0).
        Assert.All(forced.GetProperty("logprobs").GetProperty("token_logprobs").EnumerateArray(), l => Assert.True(l.GetDouble() < -0.01, $"{l}"));

        var plain = await Complete("""{"prompt": "hello", "max_tokens": 3, "temperature": 0}""");
        string first = plain.GetProperty("text").GetString()!;
        var firstIds = demo.Engine.Tokenizer!.Encode(first, addBos: false);
        var banned = await Complete($$"""{"prompt": "hello", "max_tokens": 3, "temperature": 0, "logit_bias": {{Bias(firstIds[0], -100)}} }""");
        var bannedIds = demo.Engine.Tokenizer!.Encode(banned.GetProperty("text").GetString()!, addBos: false);
        Assert.DoesNotContain(firstIds[0], bannedIds);

        // Sampled (chat) with the bias: the token is forced there too.
        using var chat = await demo.Http.PostAsync("v1/chat/completions", Body($$"""{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 1, "seed": 3, "logit_bias": {{Bias(z, 100)}} }"""));
        string chatText = await chat.Content.ReadAsStringAsync();
        Assert.True(chat.StatusCode == HttpStatusCode.OK, chatText);
        Assert.Equal("ZZZ", JsonDocument.Parse(chatText).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
    }

    [Theory]
    [InlineData("[1, 2]", "must be an object")]
    [InlineData("{\"x\": 1}", "key \"x\" is not a token id")]
    [InlineData("{\"-1\": 1}", "key \"-1\" is not a token id")]
    [InlineData("{\"99999999\": 1}", "key \"99999999\" is not a token id")]
    [InlineData("{\"\u0663\": 1}", "key \"\\u0663\" is not a token id")]
    [InlineData("{\"65\": 1, \"065\": 2}", "gives token 65 twice")]
    [InlineData("{\"5\": 101}", "must be a number from -100 to 100, got 101")]
    [InlineData("{\"5\": \"1\"}", "must be a number from -100 to 100")]
    public async Task A_bad_map_is_a_400_naming_logit_bias(string bias, string message)
    {
        using var response = await demo.Http.PostAsync("v1/completions", Body($$"""{"prompt": "x", "max_tokens": 1, "logit_bias": {{bias}}}"""));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var e = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal("logit_bias", e.GetProperty("param").GetString());
        Assert.Contains(message, e.GetProperty("message").GetString());
    }
}
