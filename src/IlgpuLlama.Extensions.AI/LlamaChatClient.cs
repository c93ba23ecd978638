using System.Runtime.CompilerServices;
using IlgpuLlama.Constraints;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;
using IlgpuLlama.Text;
using Microsoft.Extensions.AI;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;
using ChatRole = Microsoft.Extensions.AI.ChatRole;
using LlamaMessage = IlgpuLlama.Text.ChatMessage;

namespace IlgpuLlama.Extensions.AI;

/// <summary>
/// An <see cref="IChatClient"/> over a <see cref="LlamaEngine"/>, so Semantic Kernel and any other
/// Microsoft.Extensions.AI consumer runs on the engine:
/// <code>
/// IChatClient client = LlamaChatClient.Load("weights/Llama-3.2-1B-Instruct");   // or engine.AsChatClient()
/// Console.WriteLine(await client.GetResponseAsync("Name three colours."));
/// </code>
/// The conversation goes through the engine's Llama 3 chat template (system, user and assistant
/// messages of text). <see cref="ChatOptions"/> map onto <see cref="GenerationSettings"/>:
/// <see cref="ChatOptions.Temperature"/> (0 = greedy), <see cref="ChatOptions.TopP"/>,
/// <see cref="ChatOptions.TopK"/>, <see cref="ChatOptions.MaxOutputTokens"/>,
/// <see cref="ChatOptions.StopSequences"/>, <see cref="ChatOptions.Seed"/> and
/// <see cref="ChatOptions.Instructions"/> (added to the system message), and the engine's repetition
/// penalty and min-p as <see cref="ChatOptions.AdditionalProperties"/> "repetition_penalty" and
/// "min_p"; what is not set keeps the
/// client's defaults (the engine's: 64 new tokens, temperature 0.6, top-k 50, top-p 0.9).
/// <see cref="ChatOptions.ResponseFormat"/> Json / ForJsonSchema run as the engine's structured output
/// (the reply always parses, and validates against the schema). <see cref="ChatOptions.Tools"/>' functions
/// are offered in the Llama 3 template; a call comes back as <see cref="FunctionCallContent"/>, and
/// <see cref="ChatToolMode.RequireAny"/> / RequireSpecific constrain it as it is written. Function calls
/// and results in the conversation go back into the prompt. Hosted tools and non-text content throw
/// <see cref="NotSupportedException"/>.
/// Many requests may run at once (the engine batches them).
/// </summary>
public sealed class LlamaChatClient : IChatClient
{
    /// <summary>The provider name in <see cref="ChatClientMetadata"/>.</summary>
    public const string ProviderName = "ilgpu-llama";

    /// <summary>The <see cref="ChatOptions.AdditionalProperties"/> key of the Hugging Face-style repetition penalty (<see cref="SamplingOptions.RepetitionPenalty"/>; 1 = off).</summary>
    public const string RepetitionPenaltyKey = "repetition_penalty";

    /// <summary>The <see cref="ChatOptions.AdditionalProperties"/> key of min-p (<see cref="SamplingOptions.MinP"/>; 0 = off).</summary>
    public const string MinPKey = "min_p";

    /// <summary>The model id when none is given (the server's default too).</summary>
    public const string DefaultModelId = "llama";

    readonly bool ownsEngine;
    readonly ChatClientMetadata metadata;
    int disposed;

    /// <summary>
    /// A client over <paramref name="engine"/>, which the caller keeps owning (disposing the client
    /// leaves it running).
    /// </summary>
    /// <param name="engine">the engine every request goes to</param>
    /// <param name="modelId">the id reported as <see cref="ChatResponse.ModelId"/> (default "llama")</param>
    /// <param name="defaults">settings that <see cref="ChatOptions"/> override (default: the engine's)</param>
    public LlamaChatClient(LlamaEngine engine, string? modelId = null, GenerationSettings? defaults = null)
        : this(engine, modelId, defaults, ownsEngine: false)
    {
    }

    LlamaChatClient(LlamaEngine engine, string? modelId, GenerationSettings? defaults, bool ownsEngine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        if (engine.Tokenizer is null)
            throw new ArgumentException("the engine has no tokenizer, so it cannot encode a conversation; load the model directory with its tokenizer files", nameof(engine));
        Engine = engine;
        ModelId = string.IsNullOrWhiteSpace(modelId) ? DefaultModelId : modelId;
        Defaults = defaults ?? new GenerationSettings();
        this.ownsEngine = ownsEngine;
        metadata = new ChatClientMetadata(ProviderName, providerUri: null, defaultModelId: ModelId);
    }

    /// <summary>
    /// Loads a model (<see cref="LlamaEngine.Load"/>: a Hugging Face directory, a GGUF file or
    /// ollama:NAME[:TAG]) into an engine that the client owns: disposing the client disposes it.
    /// The model id is the directory's (or file's, or Ollama model's) name.
    /// </summary>
    public static LlamaChatClient Load(string modelDir, LlamaEngineOptions? options = null, GenerationSettings? defaults = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDir);
        var engine = LlamaEngine.Load(modelDir, options);
        try
        {
            return new LlamaChatClient(engine, ModelIdOf(modelDir), defaults, ownsEngine: true);
        }
        catch
        {
            engine.Dispose();
            throw;
        }
    }

    static string ModelIdOf(string modelDir)
    {
        const string ollama = "ollama:";
        if (modelDir.StartsWith(ollama, StringComparison.OrdinalIgnoreCase))
            return modelDir[ollama.Length..];
        string name = Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
        return name.Length > 0 ? name : DefaultModelId;
    }

    /// <summary>The engine the requests go to.</summary>
    public LlamaEngine Engine { get; }

    /// <summary>The model id reported in every response.</summary>
    public string ModelId { get; }

    /// <summary>The settings a request starts from before its <see cref="ChatOptions"/> are applied.</summary>
    public GenerationSettings Defaults { get; }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (prompt, settings, tools) = Prepare(messages, options);
        var result = await Engine.Submit(prompt, settings, cancellationToken).Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
        var call = tools is null ? null : ToolCallFormat.Parse(result.Text, tools);
        var message = call is null
            ? new ChatMessage(ChatRole.Assistant, result.Text) { MessageId = NewId("msg") }
            : new ChatMessage(ChatRole.Assistant, [Content(call)]) { MessageId = NewId("msg") };
        return new ChatResponse(message)
        {
            ResponseId = NewId("chatcmpl"),
            ModelId = ModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = call is null ? Map(result.FinishReason) : ChatFinishReason.ToolCalls,
            Usage = Usage(prompt.Count, result.GeneratedTokens.Count),
            RawRepresentation = result,
        };
    }

    /// <inheritdoc />
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        // Checked and submitted now, so a bad request throws here rather than at the first MoveNextAsync.
        var (prompt, settings, tools) = Prepare(messages, options);
        var tokens = Engine.GenerateAsync(prompt, settings, cancellationToken);
        return Stream(tokens, prompt.Count, tools, cancellationToken);
    }

    /// <summary>A tool call as Microsoft.Extensions.AI's content: its id, name and arguments (JSON values).</summary>
    static FunctionCallContent Content(ChatToolCall call) =>
        new(NewId("call"), call.Name, System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, object?>>(call.Arguments));

    async IAsyncEnumerable<ChatResponseUpdate> Stream(IAsyncEnumerable<GeneratedToken> tokens, int promptTokens, IReadOnlyList<ChatTool>? tools, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        string responseId = NewId("chatcmpl"), messageId = NewId("msg");
        var created = DateTimeOffset.UtcNow;
        int generated = 0;
        ChatResponseUpdate Update(IList<AIContent> contents) => new(ChatRole.Assistant, contents)
        {
            ResponseId = responseId, MessageId = messageId, ModelId = ModelId, CreatedAt = created,
        };
        // With tools, a reply that begins with '{' may be a call: its updates wait until it ends (then it is
        // one FunctionCallContent) or shows itself to be text (then they go out as they were).
        var hold = tools is null ? null : new ToolCallHold<ChatResponseUpdate>(tools);
        await foreach (var token in tokens.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            generated++;
            var update = Update(token.Text.Length > 0 ? [new TextContent(token.Text)] : []);
            update.RawRepresentation = token;
            if (token.FinishReason is { } reason)
                update.FinishReason = Map(reason);
            var (send, call) = hold is null ? ([update], null) : hold.Add(token.Text, update, last: token.FinishReason is not null);
            if (call is not null)
            {
                var callUpdate = Update([Content(call)]);
                callUpdate.RawRepresentation = token;
                callUpdate.FinishReason = ChatFinishReason.ToolCalls;
                yield return callUpdate;
                continue;
            }
            // Tokens that release no text (a UTF-8 character or a possible stop string still
            // incomplete, special tokens) make no update, except the last, which carries the finish reason.
            foreach (var u in send)
                if (u.Text.Length > 0 || u.FinishReason is not null)
                    yield return u;
        }
        yield return Update([new UsageContent(Usage(promptTokens, generated))]);
    }

    /// <summary>The prompt's token ids and the request's settings; throws for what the engine does not support.</summary>
    (IReadOnlyList<int> Prompt, GenerationSettings Settings, IReadOnlyList<ChatTool>? Tools) Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        ArgumentNullException.ThrowIfNull(messages);
        var conversation = ToLlama(messages, options?.Instructions);
        var settings = ToSettings(options);
        var (offered, answerable, required) = Tools(options);
        if (required)
            settings = settings with { ResponseFormat = JsonGrammar.ForToolCall(answerable!) };
        else if (answerable is { Count: > 0 } && settings.ResponseFormat is null)
            settings = settings with { ResponseFormat = JsonGrammar.ForToolCallOrText(answerable) }; // ChatToolMode.Auto: a call, once begun, is constrained
        return (Engine.EncodeChat(conversation, tools: offered), settings, answerable);
    }

    /// <summary>
    /// The tools of a request: those written into the prompt (<see cref="ChatOptions.Tools"/>' functions,
    /// none with <see cref="ChatToolMode.None"/>), those a reply may call (all, or the one
    /// <see cref="ChatToolMode.RequireSpecific"/> names), and whether it must (RequireAny/RequireSpecific:
    /// the call is then constrained as it is written).
    /// </summary>
    static (IReadOnlyList<ChatTool>? Offered, IReadOnlyList<ChatTool>? Answerable, bool Required) Tools(ChatOptions? options)
    {
        if (options?.Tools is not { Count: > 0 } list || options.ToolMode is NoneChatToolMode)
            return (null, null, false);
        var tools = new List<ChatTool>();
        foreach (var tool in list)
        {
            if (tool is not AIFunctionDeclaration function)
                throw new NotSupportedException($"the tool '{tool.Name}' ({tool.GetType().Name}) is not supported: the engine calls functions (AIFunction / AIFunctionDeclaration)");
            try
            {
                tools.Add(ChatTool.Function(function.Name, string.IsNullOrEmpty(function.Description) ? null : function.Description, function.JsonSchema.GetRawText()));
            }
            catch (ArgumentException e)
            {
                throw new NotSupportedException($"the function '{function.Name}' cannot be offered: {e.Message}", e);
            }
        }
        return options.ToolMode switch
        {
            RequiredChatToolMode { RequiredFunctionName: { } name } => (tools, [tools.FirstOrDefault(t => t.Name == name)
                ?? throw new ArgumentException($"ChatToolMode.RequireSpecific names '{name}', which is not among the tools ({string.Join(", ", tools.Select(t => t.Name))})", nameof(options))], true),
            RequiredChatToolMode => (tools, tools, true),
            _ => (tools, tools, false),
        };
    }

    /// <summary>The messages in the engine's form: roles system, user, assistant (text and function calls) and tool (function results).</summary>
    static List<LlamaMessage> ToLlama(IEnumerable<ChatMessage> messages, string? instructions)
    {
        var list = new List<LlamaMessage>();
        foreach (var m in messages)
        {
            ArgumentNullException.ThrowIfNull(m, nameof(messages));
            string role = m.Role == ChatRole.System ? "system"
                : m.Role == ChatRole.User ? "user"
                : m.Role == ChatRole.Assistant ? "assistant"
                : m.Role == ChatRole.Tool ? "tool"
                : throw new NotSupportedException($"the chat role '{m.Role}' is not supported (IlgpuLlama.Extensions.AI takes system, user, assistant and tool messages)");
            var calls = new List<ChatToolCall>();
            foreach (var content in m.Contents)
            {
                switch (content)
                {
                    case TextContent or UsageContent or TextReasoningContent:
                        break;
                    case FunctionCallContent call when role == "assistant":
                        calls.Add(new ChatToolCall(call.Name, System.Text.Json.JsonSerializer.Serialize(call.Arguments ?? new Dictionary<string, object?>())) { Id = call.CallId });
                        break;
                    case FunctionResultContent result when role == "tool":
                        // The tool's result as the template gives it back: its text, or its JSON.
                        list.Add(new LlamaMessage(IlgpuLlama.Text.ChatRole.Tool, result.Result is string text ? text : System.Text.Json.JsonSerializer.Serialize(result.Result)));
                        break;
                    default:
                        throw new NotSupportedException($"{content.GetType().Name} in a {role} message is not supported: the engine takes text, function calls (assistant) and function results (tool)");
                }
            }
            if (role == "tool")
            {
                if (!m.Contents.OfType<FunctionResultContent>().Any())
                    list.Add(new LlamaMessage(IlgpuLlama.Text.ChatRole.Tool, m.Text));
                continue;
            }
            list.Add(new LlamaMessage(role, m.Text) { ToolCalls = calls });
        }
        if (!string.IsNullOrWhiteSpace(instructions))
        {
            // The Llama 3 template takes one leading system message: the instructions join it.
            if (list.Count > 0 && list[0].Role == "system")
                list[0] = list[0] with { Content = $"{list[0].Content}\n\n{instructions}" };
            else
                list.Insert(0, new LlamaMessage("system", instructions));
        }
        if (list.Count == 0)
            throw new ArgumentException("the conversation has no message", nameof(messages));
        return list;
    }

    /// <summary>
    /// The settings a request with <paramref name="options"/> runs with: <see cref="Defaults"/> with
    /// temperature, top-p, top-k, seed, max output tokens, stop sequences (added to the defaults'),
    /// and the additional properties "repetition_penalty" and "min_p" applied where set, and a JSON
    /// response format as the engine's structured output (<see cref="GenerationSettings.ResponseFormat"/>).
    /// Throws <see cref="NotSupportedException"/> for a schema outside the engine's subset and for tools;
    /// the engine's own checks (ranges, a token limit too small for the JSON) run when the request is submitted.
    /// </summary>
    public GenerationSettings ToSettings(ChatOptions? options)
    {
        if (options is null)
            return Defaults;
        JsonGrammar? grammar = null;
        if (options.ResponseFormat is ChatResponseFormatJson json)
        {
            // Structured output: any JSON object, or the schema's JSON (the engine's subset; other keywords throw naming them).
            try
            {
                grammar = json.Schema is { } schema ? JsonGrammar.FromSchema(schema) : JsonGrammar.AnyObject;
            }
            catch (UnsupportedSchemaException e)
            {
                throw new NotSupportedException($"the JSON schema{(json.SchemaName is { } name ? $" '{name}'" : "")} is not supported: {e.Message}", e);
            }
        }
        else if (options.ResponseFormat is { } format and not ChatResponseFormatText)
            throw new NotSupportedException($"the response format {format.GetType().Name} is not supported (use ChatResponseFormat.Text, Json or ForJsonSchema)");
        SamplingOptions sampling = Defaults.Sampling;
        if (options.Temperature is { } temperature)
            sampling = sampling with { Temperature = temperature };
        if (options.TopP is { } topP)
            sampling = sampling with { TopP = topP };
        if (options.TopK is { } topK)
            sampling = sampling with { TopK = topK };
        if (options.Seed is { } seed)
            sampling = sampling with { Seed = unchecked((ulong)seed) };
        // The engine's own filters, which ChatOptions has no property for.
        if (options.AdditionalProperties is { } extra)
        {
            if (extra.TryGetValue(RepetitionPenaltyKey, out float penalty))
                sampling = sampling with { RepetitionPenalty = penalty };
            else if (extra.ContainsKey(RepetitionPenaltyKey))
                throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{RepetitionPenaltyKey}\"] must be a number", nameof(options));
            if (extra.TryGetValue(MinPKey, out float minP))
                sampling = sampling with { MinP = minP };
            else if (extra.ContainsKey(MinPKey))
                throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{MinPKey}\"] must be a number", nameof(options));
        }
        var settings = Defaults with { Sampling = sampling };
        if (options.MaxOutputTokens is { } max)
            settings = settings with { MaxNewTokens = max };
        if (options.StopSequences is { Count: > 0 } stops)
            settings = settings with { StopStrings = [.. Defaults.StopStrings, .. stops] };
        if (grammar is not null)
            settings = settings with { ResponseFormat = grammar };
        return settings;
    }

    static ChatFinishReason Map(FinishReason reason) => reason switch
    {
        FinishReason.Length => ChatFinishReason.Length,
        _ => ChatFinishReason.Stop,
    };

    static UsageDetails Usage(int input, int output) => new() { InputTokenCount = input, OutputTokenCount = output, TotalTokenCount = input + output };

    static string NewId(string prefix) => $"{prefix}-{Guid.NewGuid():N}";

    /// <summary>
    /// This client for <see cref="LlamaChatClient"/> and <see cref="IChatClient"/>, its
    /// <see cref="ChatClientMetadata"/>, the <see cref="LlamaEngine"/> and its <see cref="LlamaModel"/>;
    /// null for anything else or any key.
    /// </summary>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
            return null;
        if (serviceType == typeof(ChatClientMetadata))
            return metadata;
        if (serviceType.IsInstanceOfType(this))
            return this;
        if (serviceType.IsInstanceOfType(Engine))
            return Engine;
        if (serviceType.IsInstanceOfType(Engine.Advanced.Model))
            return Engine.Advanced.Model;
        return null;
    }

    /// <summary>Disposes the engine when the client loaded it (<see cref="Load"/>); an engine it was given keeps running.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 0 && ownsEngine)
            Engine.Dispose();
    }
}

/// <summary><see cref="LlamaEngine"/> as a Microsoft.Extensions.AI <see cref="IChatClient"/>.</summary>
public static class LlamaEngineChatClientExtensions
{
    /// <summary>
    /// An <see cref="IChatClient"/> over the engine, which the caller keeps owning (disposing the
    /// client leaves the engine running).
    /// </summary>
    /// <param name="engine">the engine</param>
    /// <param name="modelId">the id reported in responses (default "llama")</param>
    /// <param name="defaults">settings that <see cref="ChatOptions"/> override (default: the engine's)</param>
    public static IChatClient AsChatClient(this LlamaEngine engine, string? modelId = null, GenerationSettings? defaults = null) =>
        new LlamaChatClient(engine, modelId, defaults);
}
