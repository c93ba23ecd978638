using System.Net;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Constraints;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Constraints;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Issue 22 item 5: <c>tools</c> on /v1/chat/completions with the Llama 3.1/3.2 chat template: the
/// definitions in the prompt as Meta's template writes them, assistant tool calls and tool results in
/// the conversation, and the errors. (A reply that is a call, which random weights only write when
/// the constraint makes them, is covered with tool_choice in the structured-output tests.)
/// </summary>
public sealed class ToolsTests(ChatPageServer demo) : IClassFixture<ChatPageServer>
{
    const string Weather = """{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}""";

    static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    async Task<(HttpStatusCode Status, JsonElement Json)> Post(string json)
    {
        using var response = await demo.Http.PostAsync("v1/chat/completions", Body(json));
        return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    static ChatTool Tool(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return ChatTool.FromOpenAi(doc.RootElement);
    }

    [Fact]
    public async Task The_tools_and_the_tool_turns_go_into_the_prompt_as_the_template_writes_them()
    {
        string messages = """
            [{"role": "user", "content": "Weather in Oslo?"},
             {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
             {"role": "tool", "tool_call_id": "call_9", "content": "-3 C, snow"}]
            """;
        var (status, json) = await Post($$"""{"messages": {{messages}}, "tools": [{{Weather}}], "max_tokens": 2, "temperature": 0}""");
        Assert.True(status == HttpStatusCode.OK, json.GetRawText());
        ChatMessage[] expected =
        [
            new(ChatRole.User, "Weather in Oslo?"),
            new(ChatRole.Assistant, "") { ToolCalls = [new("get_weather", "{\"city\": \"Oslo\"}")] },
            new(ChatRole.Tool, "-3 C, snow"),
        ];
        var prompt = demo.Engine.EncodeChat(expected, tools: [Tool(Weather)]);
        Assert.Equal(prompt.Count, json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        // Random weights do not write a call unasked: the reply is text, finished as usual.
        var choice = json.GetProperty("choices")[0];
        Assert.Equal(JsonValueKind.String, choice.GetProperty("message").GetProperty("content").ValueKind);
        Assert.False(choice.GetProperty("message").TryGetProperty("tool_calls", out _));
        Assert.Contains(choice.GetProperty("finish_reason").GetString(), new[] { "stop", "length" });

        // tool_choice "none": the plain format, without the definitions.
        var (_, none) = await Post($$"""{"messages": [{"role": "user", "content": "hi"}], "tools": [{{Weather}}], "tool_choice": "none", "max_tokens": 1}""");
        Assert.Equal(demo.Engine.EncodeChat([new ChatMessage("user", "hi")]).Count, none.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [Theory]
    [InlineData("\"tools\": {}", "tools", "must be a list")]
    [InlineData("\"tools\": [{\"type\": \"retrieval\"}]", "tools[0]", "\"function\"")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"bad name\"}}]", "tools[0]", "letters, digits")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": 3}}]", "tools[0]", "JSON Schema object")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}, {\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", "tools[1]", "two tools")]
    [InlineData("\"tool_choice\": \"required\"", "tool_choice", "needs tools")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": \"always\"", "tool_choice", "\"required\"")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"g\"}}", "tool_choice", "not in tools")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"string\"}}}]", "tools[0]", "object schema")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"x\\ud800y\"}}]", "tools", "not valid Unicode")]
    [InlineData("\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"t\", \"schema\": {\"enum\": [\"\\ud800\"]}}}", "response_format", "not valid Unicode")]
    public async Task Bad_tools_are_a_400_naming_the_field(string fields, string param, string inMessage)
    {
        var (status, json) = await Post($$"""{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, {{fields}}}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var e = json.GetProperty("error");
        Assert.Equal(param, e.GetProperty("param").GetString());
        Assert.Contains(inMessage, e.GetProperty("message").GetString());
    }

    [Fact]
    public async Task Every_streamed_choice_ends_with_its_finish_reason_when_tools_hold_text_back()
    {
        // One token at a high temperature: sometimes it starts text that might have been a call; the
        // finish must follow the released text all the same.
        for (int seed = 1; seed <= 6; seed++)
        {
            using var response = await demo.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
            {
                Content = Body($$"""{"messages": [{"role": "user", "content": "hi"}], "tools": [{{Weather}}], "max_tokens": 1, "temperature": 2, "seed": {{seed}}, "n": 2, "stream": true}"""),
            }, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var finishes = new List<int>();
            while (await reader.ReadLineAsync() is { } line && line != "data: [DONE]")
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal))
                    continue;
                var choice = JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0];
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String)
                    finishes.Add(choice.GetProperty("index").GetInt32());
            }
            Assert.Equal([0, 1], finishes.Order());
        }
    }

    [Fact]
    public async Task Conversations_the_template_cannot_hold_are_a_400()
    {
        string twoCalls = """{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}, {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}""";
        var (status, json) = await Post($$"""{"messages": [{"role": "user", "content": "hi"}, {{twoCalls}}], "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("one call per turn", json.GetProperty("error").GetProperty("message").GetString());

        (status, json) = await Post($$"""{"messages": [{"role": "system", "content": "s"}], "tools": [{{Weather}}], "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("user message", json.GetProperty("error").GetProperty("message").GetString());

        (status, json) = await Post("""{"messages": [{"role": "user", "content": "hi", "tool_calls": []}], "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("messages[0].tool_calls", json.GetProperty("error").GetProperty("param").GetString());

        static string Call(string name, string arguments) =>
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"" + name + "\", \"arguments\": " + arguments + "}}]}], \"max_tokens\": 1}";
        foreach (var (request, param) in new[]
        {
            (Call("get_weather", "\"not json\""), "messages[1].tool_calls[0].function.arguments"),
            (Call("get_weather", "\"[1]\""), "messages[1].tool_calls[0].function.arguments"),
            (Call("get_weather", "\"{\\\"a\\\": \\\"\\\\ud800\\\"}\""), "messages[1].tool_calls[0].function.arguments"),
            (Call("a\\\"b", "\"{}\""), "messages[1].tool_calls[0].function.name"),
            ("""{"messages": [{"content": "hi"}], "max_tokens": 1}""", "messages[0].role"),
        })
        {
            (status, json) = await Post(request);
            Assert.True(status == HttpStatusCode.BadRequest, request + " -> " + json.GetRawText());
            Assert.Equal(param, json.GetProperty("error").GetProperty("param").GetString());
        }

        using var completions = await demo.Http.PostAsync("v1/completions", Body($$"""{"prompt": "hi", "tools": [{{Weather}}]}"""));
        Assert.Equal(HttpStatusCode.BadRequest, completions.StatusCode);
        Assert.Contains("/v1/chat/completions", await completions.Content.ReadAsStringAsync());
    }
}

/// <summary>
/// Issue 22 item 5 with item 3: tool_choice required or a named function constrains the reply to a
/// call while it is written, so even random weights answer with a call that validates against the
/// function's parameters (JsonSchema.Net), streamed or not.
/// </summary>
public sealed class ConstrainedToolCallTests(ChatPageServer demo) : IClassFixture<ChatPageServer>
{
    const string Weather = """{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"], "additionalProperties": false}}}""";
    const string WeatherParameters = """{"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"], "additionalProperties": false}""";
    const string Clock = """{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}""";

    static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    [Theory]
    [InlineData("\"required\"", 11)]
    [InlineData("{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}", 12)]
    public async Task A_required_call_comes_back_as_tool_calls_with_valid_arguments(string choice, int seed)
    {
        using var response = await demo.Http.PostAsync("v1/chat/completions", Body($$"""{"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [{{Weather}}], "tool_choice": {{choice}}, "max_tokens": 80, "temperature": 1, "seed": {{seed}}}"""));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        var c = JsonDocument.Parse(text).RootElement.GetProperty("choices")[0];
        Assert.Equal("tool_calls", c.GetProperty("finish_reason").GetString());
        var message = c.GetProperty("message");
        Assert.Equal(JsonValueKind.Null, message.GetProperty("content").ValueKind);
        var call = Assert.Single(message.GetProperty("tool_calls").EnumerateArray().ToList());
        Assert.StartsWith("call_", call.GetProperty("id").GetString());
        Assert.Equal("function", call.GetProperty("type").GetString());
        Assert.Equal("get_weather", call.GetProperty("function").GetProperty("name").GetString());
        JsonOracle.AssertValid(WeatherParameters, call.GetProperty("function").GetProperty("arguments").GetString()!);
    }

    /// <summary>
    /// tool_choice auto: a reply that begins with '{' is constrained to a call from there (the bias
    /// makes the demo model begin with it; inside the call it is only taken where the grammar allows),
    /// and with '{' banned the reply is text.
    /// </summary>
    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    public async Task Under_auto_a_reply_that_begins_a_call_is_constrained_to_a_valid_one(int seed)
    {
        int brace = Assert.Single(demo.Engine.Tokenizer!.Encode("{", addBos: false));
        using var response = await demo.Http.PostAsync("v1/chat/completions", Body($$"""{"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [{{Weather}}, {{Clock}}], "max_tokens": 120, "temperature": 1, "seed": {{seed}}, "logit_bias": {{LogitBiasTests.Bias(brace, 100)}} }"""));
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        var c = JsonDocument.Parse(text).RootElement.GetProperty("choices")[0];
        Assert.Equal("tool_calls", c.GetProperty("finish_reason").GetString());
        var call = Assert.Single(c.GetProperty("message").GetProperty("tool_calls").EnumerateArray().ToList()).GetProperty("function");
        string name = call.GetProperty("name").GetString()!;
        JsonOracle.AssertValid(name == "get_weather" ? WeatherParameters : """{"type": "object"}""", call.GetProperty("arguments").GetString()!);

        using var banned = await demo.Http.PostAsync("v1/chat/completions", Body($$"""{"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [{{Weather}}], "max_tokens": 8, "temperature": 1, "seed": {{seed}}, "logit_bias": {{LogitBiasTests.Bias(brace, -100)}} }"""));
        var b = JsonDocument.Parse(await banned.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0];
        Assert.NotEqual("tool_calls", b.GetProperty("finish_reason").GetString());
        Assert.False(b.GetProperty("message").TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array);
    }

    /// <summary>A reply that became text under tool_choice auto is masked no more: one mask (its first token), then the device samples again.</summary>
    [Fact]
    public async Task A_reply_that_became_text_under_auto_leaves_the_mask_after_its_first_token()
    {
        var engine = demo.Engine;
        int brace = Assert.Single(engine.Tokenizer!.Encode("{", addBos: false));
        var settings = new GenerationSettings
        {
            MaxNewTokens = 12,
            IgnoreEos = false,
            Sampling = new SamplingOptions { Temperature = 1f, Seed = 5 },
            ResponseFormat = JsonGrammar.ForToolCallOrText([ChatTool.FromOpenAi(JsonDocument.Parse(Weather).RootElement)]),
            LogitBias = new Dictionary<int, float> { [brace] = -100 },
        };
        var r = await engine.Submit(engine.Tokenizer.Encode("Weather?", addBos: true), settings).Completion;
        Assert.True(r.GeneratedTokens.Count > 1, $"{r.GeneratedTokens.Count} tokens");
        Assert.Equal(1, r.MaskSteps);
    }

    [Fact]
    public async Task A_streamed_call_is_one_tool_calls_delta_and_several_tools_name_one_of_them()
    {
        using var response = await demo.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
        {
            Content = Body($$"""{"messages": [{"role": "user", "content": "Time?"}], "tools": [{{Weather}}, {{Clock}}], "tool_choice": "required", "max_tokens": 80, "temperature": 1, "seed": 5, "stream": true}"""),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var deltas = new List<JsonElement>();
        var finishes = new List<string>();
        while (await reader.ReadLineAsync() is { } line && line != "data: [DONE]")
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
                continue;
            var choice = JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0];
            deltas.Add(choice.GetProperty("delta").Clone());
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String)
                finishes.Add(choice.GetProperty("finish_reason").GetString()!);
        }
        Assert.Equal(["tool_calls"], finishes);
        Assert.DoesNotContain(deltas, d => d.TryGetProperty("content", out var content) && content.GetString() is { Length: > 0 });
        var call = Assert.Single(deltas, d => d.TryGetProperty("tool_calls", out _)).GetProperty("tool_calls")[0].GetProperty("function");
        string name = call.GetProperty("name").GetString()!;
        Assert.Contains(name, new[] { "get_weather", "now" });
        // Each function's own schema holds, whichever was named.
        JsonOracle.AssertValid(name == "get_weather" ? WeatherParameters : """{"type": "object"}""", call.GetProperty("arguments").GetString()!);
    }
}
