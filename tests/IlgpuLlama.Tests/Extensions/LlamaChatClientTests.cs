using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Extensions.AI;
using IlgpuLlama.Tests.Cli;
using Microsoft.Extensions.AI;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;
using LlamaMessage = IlgpuLlama.Text.ChatMessage;

namespace IlgpuLlama.Tests.Extensions;

/// <summary>The demo model behind <see cref="LlamaChatClient.Load"/> (the client owns its engine), with room for a few turns.</summary>
public sealed class ChatClientDemo : IDisposable
{
    readonly DemoModelDir dir = new();

    public ChatClientDemo() => Client = LlamaChatClient.Load(dir.Path,
        new LlamaEngineOptions { Device = DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 1024 } });

    public LlamaChatClient Client { get; }

    public LlamaEngine Engine => Client.Engine;

    public void Dispose()
    {
        Client.Dispose();
        dir.Dispose();
    }
}

/// <summary>Microsoft.Extensions.AI's <see cref="IChatClient"/> over the engine, on the demo model.</summary>
public sealed class LlamaChatClientTests(ChatClientDemo demo) : IClassFixture<ChatClientDemo>
{
    static readonly ChatMessage[] Question = [new(ChatRole.System, "You are a concise assistant."), new(ChatRole.User, "Name three colours.")];

    /// <summary>A client over the shared engine that never stops at end of sequence, so token limits are exact.</summary>
    IChatClient NoEos() => demo.Engine.AsChatClient(defaults: new GenerationSettings { IgnoreEos = true });

    /// <summary>
    /// Like <see cref="NoEos"/>, with a repetition penalty: after the chat template's headers the demo's
    /// random weights repeat one blank-line token at temperatures up to 1, so without it every reply and
    /// every seed would give the same text.
    /// </summary>
    IChatClient Varied() => demo.Engine.AsChatClient(defaults: new GenerationSettings { IgnoreEos = true, Sampling = new() { RepetitionPenalty = 2f } });

    static async Task<(string Text, List<ChatResponseUpdate> Updates)> Collect(IAsyncEnumerable<ChatResponseUpdate> stream)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in stream)
            updates.Add(u);
        return (string.Concat(updates.Select(u => u.Text)), updates);
    }

    [Fact]
    public async Task Streaming_and_not_give_the_same_text_finish_reason_and_usage_at_temperature_0()
    {
        IChatClient client = Varied();
        var options = new ChatOptions { Temperature = 0f, MaxOutputTokens = 20 };
        var response = await client.GetResponseAsync(Question, options);
        var (text, updates) = await Collect(client.GetStreamingResponseAsync(Question, options));
        var streamed = updates.ToChatResponse();

        Assert.False(string.IsNullOrEmpty(response.Text));
        Assert.Equal(response.Text, text);
        Assert.Equal(response.Text, streamed.Text);
        Assert.Equal(ChatRole.Assistant, Assert.Single(response.Messages).Role);
        Assert.Equal(ChatRole.Assistant, Assert.Single(streamed.Messages).Role);
        Assert.Equal(response.FinishReason, streamed.FinishReason);
        Assert.Equal(response.Usage!.InputTokenCount, streamed.Usage!.InputTokenCount);
        Assert.Equal(response.Usage.OutputTokenCount, streamed.Usage.OutputTokenCount);
        Assert.Equal(LlamaChatClient.DefaultModelId, response.ModelId);
        Assert.Equal(LlamaChatClient.DefaultModelId, streamed.ModelId);
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
        // Only the last text update carries the finish reason; usage comes after it.
        Assert.Single(updates, u => u.FinishReason is not null);
        Assert.IsType<UsageContent>(Assert.Single(updates[^1].Contents));
    }

    [Fact]
    public async Task Max_output_tokens_is_respected_and_reported_as_length()
    {
        var response = await NoEos().GetResponseAsync(Question, new ChatOptions { Temperature = 0f, MaxOutputTokens = 5 });
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(5, response.Usage!.OutputTokenCount);

        var (_, updates) = await Collect(NoEos().GetStreamingResponseAsync(Question, new ChatOptions { Temperature = 0f, MaxOutputTokens = 5 }));
        var streamed = updates.ToChatResponse();
        Assert.Equal(ChatFinishReason.Length, streamed.FinishReason);
        Assert.Equal(5, streamed.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task A_stop_sequence_ends_the_reply_before_it()
    {
        var client = Varied();
        var full = await client.GetResponseAsync(Question, new ChatOptions { Temperature = 0f, MaxOutputTokens = 24 });
        string text = full.Text;
        // Two characters from the second on, no replacement character (an incomplete UTF-8 byte) or space among them.
        static bool Plain(char c) => c != '\uFFFD' && !char.IsWhiteSpace(c);
        int at = Enumerable.Range(1, Math.Max(0, text.Length - 2)).FirstOrDefault(i => Plain(text[i]) && Plain(text[i + 1]));
        Assert.True(at > 0, $"the greedy reply has nothing to cut at: '{text}'");
        string stop = text.Substring(at, 2);
        string expected = text[..text.IndexOf(stop, StringComparison.Ordinal)];
        Assert.NotEqual(text, expected);

        var options = new ChatOptions { Temperature = 0f, MaxOutputTokens = 24, StopSequences = [stop] };
        var cut = await client.GetResponseAsync(Question, options);
        Assert.Equal(expected, cut.Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        var (streamed, _) = await Collect(client.GetStreamingResponseAsync(Question, options));
        Assert.Equal(expected, streamed);
    }

    [Fact]
    public async Task A_seed_reproduces_a_sampled_reply_at_temperature_1()
    {
        IChatClient client = Varied();
        ChatOptions Seeded(long seed) => new() { Temperature = 1f, TopP = 1f, TopK = 0, Seed = seed, MaxOutputTokens = 16 };
        var a = await client.GetResponseAsync(Question, Seeded(7));
        var b = await client.GetResponseAsync(Question, Seeded(7));
        var (streamed, _) = await Collect(client.GetStreamingResponseAsync(Question, Seeded(7)));
        var other = await client.GetResponseAsync(Question, Seeded(8));
        Assert.Equal(a.Text, b.Text);
        Assert.Equal(a.Text, streamed);
        Assert.NotEqual(a.Text, other.Text);
    }

    [Fact]
    public void Options_map_onto_the_generation_settings()
    {
        var client = new LlamaChatClient(demo.Engine, defaults: new GenerationSettings { StopStrings = ["END"], IgnoreEos = true });
        var settings = client.ToSettings(new ChatOptions
        {
            Temperature = 0.3f, TopP = 0.7f, TopK = 11, MaxOutputTokens = 33, StopSequences = ["\n\n", "User:"], Seed = 1234,
            ResponseFormat = ChatResponseFormat.Text,
            AdditionalProperties = new() { [LlamaChatClient.RepetitionPenaltyKey] = 1.5, [LlamaChatClient.MinPKey] = 0.05f },
        });
        Assert.Equal(0.3f, settings.Sampling.Temperature);
        Assert.Equal(0.7f, settings.Sampling.TopP);
        Assert.Equal(11, settings.Sampling.TopK);
        Assert.Equal(1234UL, settings.Sampling.Seed);
        Assert.Equal(33, settings.MaxNewTokens);
        Assert.Equal(["END", "\n\n", "User:"], settings.StopStrings);
        Assert.True(settings.IgnoreEos);
        Assert.Equal(1.5f, settings.Sampling.RepetitionPenalty);
        Assert.Equal(0.05f, settings.Sampling.MinP);
        Assert.Throws<ArgumentException>(() => client.ToSettings(new ChatOptions { AdditionalProperties = new() { [LlamaChatClient.MinPKey] = "a lot" } }));

        // What is not set keeps the defaults (the engine's, here).
        var plain = demo.Client.ToSettings(new ChatOptions());
        Assert.Equal(new GenerationSettings().Sampling, plain.Sampling);
        Assert.Equal(GenerationDefaults.MaxNewTokens, plain.MaxNewTokens);
        Assert.Same(demo.Client.Defaults, demo.Client.ToSettings(null));
    }

    [Fact]
    public async Task Unsupported_schemas_contents_and_tools_throw_naming_what()
    {
        IChatClient client = demo.Client;
        var schema = ChatResponseFormat.ForJsonSchema(System.Text.Json.JsonDocument.Parse("""{"type":"string","pattern":"^a"}""").RootElement, schemaName: "colours");
        var ex = Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync(Question, new ChatOptions { ResponseFormat = schema }));
        Assert.Contains("'colours'", ex.Message);
        Assert.Contains("pattern", ex.Message);

        ChatMessage[] withImage = [new(ChatRole.User, [new DataContent(new byte[] { 1, 2, 3 }, "image/png")])];
        var image = await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(withImage));
        Assert.Contains("DataContent", image.Message);
        var hosted = await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(Question, new ChatOptions { Tools = [new HostedWebSearchTool()] }));
        Assert.Contains("functions", hosted.Message);
        var specific = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Question,
            new ChatOptions { Tools = [AIFunctionFactory.Create((int x) => x, "f")], ToolMode = ChatToolMode.RequireSpecific("g") }));
        Assert.Contains("'g'", specific.Message);

        // The engine's own range checks still apply.
        await Assert.ThrowsAnyAsync<ArgumentException>(() => client.GetResponseAsync(Question, new ChatOptions { TopP = 0f }));
    }

    [Fact]
    public async Task Usage_counts_the_prompt_and_every_generated_token()
    {
        IChatClient client = demo.Client;
        var response = await client.GetResponseAsync(Question, new ChatOptions { Temperature = 0f, MaxOutputTokens = 12 });
        var result = Assert.IsType<RequestResult>(response.RawRepresentation);
        int prompt = demo.Engine.EncodeChat([new LlamaMessage("system", "You are a concise assistant."), new LlamaMessage("user", "Name three colours.")]).Count;
        Assert.Equal(prompt, response.Usage!.InputTokenCount);
        Assert.Equal(result.GeneratedTokens.Count, response.Usage.OutputTokenCount);
        Assert.InRange(response.Usage.OutputTokenCount!.Value, 1, 12);
        Assert.Equal(prompt + result.GeneratedTokens.Count, response.Usage.TotalTokenCount);
        Assert.Equal("demo-tiny-llama3", response.ModelId);
    }

    [Fact]
    public async Task A_multi_turn_conversation_carries_the_replies()
    {
        IChatClient client = Varied();
        var options = new ChatOptions { Temperature = 0f, MaxOutputTokens = 8 };
        List<ChatMessage> chat = [.. Question];
        var first = await client.GetResponseAsync(chat, options);
        chat.AddMessages(first);
        chat.Add(new ChatMessage(ChatRole.User, "And three more?"));
        var second = await client.GetResponseAsync(chat, options);
        chat.AddMessages(second);

        Assert.Equal([ChatRole.System, ChatRole.User, ChatRole.Assistant, ChatRole.User, ChatRole.Assistant], chat.Select(m => m.Role));
        Assert.False(string.IsNullOrEmpty(second.Text));
        // The second prompt is the first conversation, its reply and the new question, in the chat template.
        var expected = demo.Engine.EncodeChat(chat.Take(4).Select(m => new LlamaMessage(m.Role.Value, m.Text)).ToList());
        Assert.Equal(expected.Count, second.Usage!.InputTokenCount);
        Assert.True(second.Usage.InputTokenCount > first.Usage!.InputTokenCount + 4);
        // Instructions join the system message.
        var instructedOptions = options.Clone();
        instructedOptions.Instructions = "Answer in French.";
        var instructed = await client.GetResponseAsync(chat, instructedOptions);
        Assert.True(instructed.Usage!.InputTokenCount > second.Usage.InputTokenCount + second.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task Services_metadata_and_ownership_follow_the_contract()
    {
        IChatClient client = demo.Engine.AsChatClient(modelId: "tiny");
        Assert.Same(client, client.GetService<IChatClient>());
        Assert.Same(client, client.GetService<LlamaChatClient>());
        Assert.Same(demo.Engine, client.GetService<LlamaEngine>());
        Assert.Same(demo.Engine.Advanced.Model, client.GetService<LlamaModel>());
        Assert.Null(client.GetService<LlamaEngine>("some key"));
        Assert.Null(client.GetService<string>());
        var metadata = client.GetService<ChatClientMetadata>()!;
        Assert.Equal("ilgpu-llama", metadata.ProviderName);
        Assert.Equal("tiny", metadata.DefaultModelId);
        Assert.Equal("demo-tiny-llama3", demo.Client.GetService<ChatClientMetadata>()!.DefaultModelId);

        // Disposing a client over an engine it was given leaves the engine running.
        client.Dispose();
        Assert.Throws<ObjectDisposedException>(() => client.GetStreamingResponseAsync(Question));
        var again = await demo.Engine.AsChatClient().GetResponseAsync(Question, new ChatOptions { Temperature = 0f, MaxOutputTokens = 2 });
        Assert.NotNull(again.Usage);
    }

    [Fact]
    public async Task Json_response_formats_run_as_structured_output()
    {
        IChatClient client = demo.Client;
        const string schemaText = """{"type":"object","properties":{"colour":{"enum":["red","green","blue"]},"count":{"type":"integer"}},"required":["colour","count"],"additionalProperties":false}""";
        var schema = ChatResponseFormat.ForJsonSchema(System.Text.Json.JsonDocument.Parse(schemaText).RootElement, schemaName: "pick");
        var reply = await client.GetResponseAsync(Question, new ChatOptions { ResponseFormat = schema, MaxOutputTokens = 40, Temperature = 1f, Seed = 7 });
        IlgpuLlama.Tests.Constraints.JsonOracle.AssertValid(schemaText, reply.Text);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(Question, new ChatOptions { ResponseFormat = ChatResponseFormat.Json, MaxOutputTokens = 24, Temperature = 1f, Seed = 8 }))
            updates.Add(u);
        IlgpuLlama.Tests.Constraints.JsonOracle.AssertValid(null, updates.ToChatResponse().Text);
    }

    [Fact]
    public async Task Function_calls_come_back_as_FunctionCallContent_and_their_results_go_into_the_prompt()
    {
        IChatClient client = demo.Client;
        var add = AIFunctionFactory.Create((int x, int y) => x + y, "add", "Adds two integers");
        string parameters = add.JsonSchema.GetRawText();
        // A required call: constrained as it is written, so even random weights call it with valid arguments.
        var options = new ChatOptions { Tools = [add], ToolMode = ChatToolMode.RequireAny, MaxOutputTokens = 60, Temperature = 1f, Seed = 3 };
        ChatMessage[] ask = [new(ChatRole.User, "1 + 2?")];
        var response = await client.GetResponseAsync(ask, options);
        Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);
        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Equal("add", call.Name);
        IlgpuLlama.Tests.Constraints.JsonOracle.AssertValid(parameters, System.Text.Json.JsonSerializer.Serialize(call.Arguments));

        // Streamed: one update carrying the call.
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(ask, new ChatOptions { Tools = [add], ToolMode = ChatToolMode.RequireAny, MaxOutputTokens = 60, Temperature = 1f, Seed = 4 }))
            updates.Add(u);
        var streamed = updates.ToChatResponse();
        Assert.Equal(ChatFinishReason.ToolCalls, streamed.FinishReason);
        Assert.Single(streamed.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.DoesNotContain(updates, u => u.Text.Length > 0);

        // The call and its result in the conversation: the prompt is the engine's chat template with tools.
        ChatMessage[] conversation = [.. ask, .. response.Messages, new(ChatRole.Tool, [new FunctionResultContent(call.CallId, 3)])];
        var next = await client.GetResponseAsync(conversation, new ChatOptions { Tools = [add], MaxOutputTokens = 2, Temperature = 0f });
        var expected = demo.Engine.EncodeChat(
            [new("user", "1 + 2?"), new(IlgpuLlama.Text.ChatRole.Assistant, "") { ToolCalls = [new IlgpuLlama.Text.ChatToolCall("add", System.Text.Json.JsonSerializer.Serialize(call.Arguments))] }, new(IlgpuLlama.Text.ChatRole.Tool, "3")],
            tools: [IlgpuLlama.Text.ChatTool.Function("add", "Adds two integers", parameters)]);
        Assert.Equal(expected.Count, next.Usage!.InputTokenCount);
    }
}
