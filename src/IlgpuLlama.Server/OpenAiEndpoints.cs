using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using IlgpuLlama.Constraints;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;
using IlgpuLlama.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace IlgpuLlama.Server;

/// <summary>
/// The OpenAI-compatible endpoints over one <see cref="LlamaEngine"/>: GET /health, GET /v1/models,
/// POST /v1/completions and /v1/chat/completions (server-sent events for <c>stream: true</c>), GET
/// /metrics with <see cref="OpenAiEndpointOptions.Metrics"/>, and the chat page at GET /. Errors have
/// OpenAI's shape. A client that disconnects cancels its request, which frees its KV slot. When the
/// application begins stopping, new requests get 503, running ones finish for
/// <see cref="OpenAiEndpointOptions.ShutdownGrace"/>, then what is left is cancelled.
/// One instance per application (a singleton of <see cref="LlamaServerExtensions.AddLlamaEngine(Microsoft.Extensions.DependencyInjection.IServiceCollection, LlamaEngine, OpenAiEndpointOptions?)"/>);
/// <see cref="LlamaServerExtensions.MapOpenAiEndpoints"/> maps it.
/// </summary>
public sealed class OpenAiEndpoints : IDisposable
{
    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    readonly LlamaEngine engine;
    readonly OpenAiEndpointOptions options;
    readonly ServerMetrics? metrics;
    readonly ILogger? logger;
    readonly CancellationTokenSource stopping = new();
    int inFlight;
    volatile bool shuttingDown;

    /// <summary>Endpoints over <paramref name="engine"/> (its tokenizer is needed: prompts are text).</summary>
    public OpenAiEndpoints(LlamaEngine engine, OpenAiEndpointOptions options, ILogger? logger = null)
    {
        if (options.ApiKey is { } apiKey && string.IsNullOrWhiteSpace(apiKey))
            throw new ArgumentException("--api-key is empty; give a key (clients send 'Authorization: Bearer KEY'), or leave --api-key out to serve without one");
        if (engine.Tokenizer is null)
            throw new ArgumentException("the server needs the model's tokenizer (text prompts and chat); the model directory has no tokenizer files");
        this.engine = engine;
        this.options = options;
        this.logger = logger;
        metrics = options.Metrics ? new ServerMetrics(engine.Advanced.Scheduler) : null;
    }

    /// <summary>The engine the endpoints generate with.</summary>
    public LlamaEngine Engine => engine;

    /// <summary>The endpoints' settings.</summary>
    public OpenAiEndpointOptions Options => options;

    /// <summary>Whether shutdown has begun (new requests get 503).</summary>
    public bool IsShuttingDown => shuttingDown;

    /// <summary>Requests being answered now.</summary>
    public int InFlight => Volatile.Read(ref inFlight);

    /// <inheritdoc/>
    public void Dispose() => stopping.Dispose();

    void Log(string line)
    {
        if (options.Log is { } log)
            log(line);
        else
            logger?.LogInformation("{Line}", line);
    }

    /// <summary>
    /// Called when the application begins stopping, before the web server closes connections: 503
    /// for new requests, running ones finish (up to the grace period) or are cancelled. Blocks until then.
    /// </summary>
    public void Drain()
    {
        shuttingDown = true;
        Log($"shutting down: {InFlight} requests running, new requests get 503");
        var deadline = DateTime.UtcNow + options.ShutdownGrace;
        while (InFlight > 0 && DateTime.UtcNow < deadline)
            Thread.Sleep(20);
        if (InFlight > 0)
        {
            Log($"cancelling {InFlight} requests still running after {options.ShutdownGrace.TotalSeconds:F0} s");
            stopping.Cancel();
            var cancelDeadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
            while (InFlight > 0 && DateTime.UtcNow < cancelDeadline)
                Thread.Sleep(20);
        }
    }

    // ---- routing ---------------------------------------------------------------------------------

    /// <summary>The paths mapped, for a host's messages.</summary>
    internal string Routes => (options.ChatPage ? "GET / (the chat page), " : "") + "GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions" + (metrics is not null ? ", GET /metrics" : "");

    /// <summary>Maps every endpoint onto <paramref name="web"/>, each behind <see cref="Guard"/>.</summary>
    internal void Map(IEndpointRouteBuilder web)
    {
        web.MapMethods("/health", ["GET", "HEAD"], c => Guard(c, "/health", keyed: false, () => Write(c, 200, new { status = "ok", model = options.ModelId, running = engine.Advanced.Scheduler.RunningCount, queued = engine.Advanced.Scheduler.QueuedCount,
            graphs = engine.Advanced.Model.RecordedGraphs, device_free_bytes = engine.Advanced.Model.Allocator.QueryDeviceMemory()?.FreeBytes, allocated_bytes = engine.Advanced.Model.Allocator.TotalLiveBytes })));
        web.MapMethods("/v1/models", ["GET", "HEAD"], c => Guard(c, "/v1/models", keyed: true, () => Write(c, 200, new
        {
            @object = "list",
            data = new[] { new { id = options.ModelId, @object = "model", created = Created, owned_by = "ilgpu-llama" } },
        })));
        web.MapMethods("/v1/models/{id}", ["GET", "HEAD"], c => Guard(c, "/v1/models/{id}", keyed: true, () => (string?)c.Request.RouteValues["id"] is var id && id == options.ModelId
            ? Write(c, 200, new { id, @object = "model", created = Created, owned_by = "ilgpu-llama" })
            : Error(c, 404, $"the model '{id}' does not exist; this server serves '{options.ModelId}'", "invalid_request_error", "model", "model_not_found")));
        foreach (var endpoint in new[] { OpenAiEndpoint.Completions, OpenAiEndpoint.Chat })
            web.MapPost(endpoint.Path, c => Guard(c, endpoint.Path, keyed: true, () => Generate(c, endpoint)));
        if (metrics is not null)
            web.MapGet(ServerMetrics.Path, c => Guard(c, ServerMetrics.Path, keyed: true, () => metrics.Serve(c)));
        if (options.ChatPage)
            web.MapMethods(ChatPage.Path, ["GET", "HEAD"], c => Guard(c, "/", keyed: false, () => ChatPage.Serve(c)));
    }

    /// <summary>Marks a request as answered by these endpoints (a host counts the others itself).</summary>
    internal static readonly object Answered = new();

    /// <summary>
    /// Around every endpoint: counts it in flight (for the drain), answers 503 while shutting down, checks
    /// <see cref="OpenAiEndpointOptions.ApiKey"/> on the <paramref name="keyed"/> endpoints (/v1 and /metrics,
    /// wherever the application mapped them), turns an unexpected exception into OpenAI's 500 error
    /// (never an empty 500 or a stack trace), and counts the answer in /metrics under <paramref name="route"/>.
    /// </summary>
    async Task Guard(HttpContext context, string route, bool keyed, Func<Task> handler)
    {
        context.Items[Answered] = this;
        Interlocked.Increment(ref inFlight);
        try
        {
            if (shuttingDown)
                await Error(context, 503, "the server is shutting down; retry on another instance or after the restart", "server_error", null, "shutting_down");
            else if (keyed && options.ApiKey is { } key && !Authorized(context, key))
                await Error(context, 401, "invalid or missing API key; send the header 'Authorization: Bearer KEY' with the key the server was started with",
                    "invalid_request_error", null, "invalid_api_key");
            else
                await handler();
        }
        catch (Exception e) when (!context.Response.HasStarted && !context.RequestAborted.IsCancellationRequested)
        {
            Log($"{context.Request.Method} {context.Request.Path} failed: {e.GetType().Name}: {e.Message}");
            await Error(context, 500, "the server failed to answer this request (an internal error; its log has the details)", "server_error", null, "internal_error");
        }
        finally
        {
            metrics?.Answered(context, route);
            Interlocked.Decrement(ref inFlight);
        }
    }

    /// <summary>Counts in /metrics a request a host answered without reaching an endpoint (404, 405, a refused Host).</summary>
    internal void CountUnrouted(HttpContext context)
    {
        if (!context.Items.ContainsKey(Answered))
            metrics?.Answered(context);
    }

    static readonly long Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>A header value fit for a message: control and non-ASCII characters replaced, at most 100 characters.</summary>
    internal static string Printable(string? value)
    {
        var s = new string((value ?? "").Select(ch => ch is >= ' ' and <= '~' ? ch : '?').ToArray());
        return s.Length > 100 ? s[..100] + "..." : s;
    }

    static bool Authorized(HttpContext c, string key)
    {
        // The scheme is case-insensitive (RFC 9110); the key is compared in constant time.
        string header = c.Request.Headers.Authorization.ToString().Trim();
        int space = header.IndexOf(' ');
        return space > 0 && header[..space].Equals("Bearer", StringComparison.OrdinalIgnoreCase)
            && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[(space + 1)..].Trim()), Encoding.UTF8.GetBytes(key));
    }

    // ---- generation ------------------------------------------------------------------------------

    /// <summary>A request error that becomes an OpenAI error response.</summary>
    internal sealed class ApiError(int status, string message, string? param, string? code = null, string type = "invalid_request_error") : Exception(message)
    {
        public int Status { get; } = status;
        public string? Param { get; } = param;
        public string? Code { get; } = code;
        public string Type { get; } = type;
    }

    /// <summary>A request as parsed and checked, before submission.</summary>
    sealed record ParsedRequest(IReadOnlyList<int> Prompt, GenerationSettings Settings, bool Stream, bool IncludeUsage, int N, ToolUse? Tools, Echo? Echo);

    /// <summary>
    /// Completions' <c>echo</c>: the prompt's text (and, with logprobs, its tokens' log-probabilities)
    /// before the completion's. <see cref="Only"/>: max_tokens 0, the prompt alone (one token is generated
    /// and dropped: the engine always takes a step).
    /// </summary>
    sealed record Echo(bool Only);

    /// <summary>
    /// The tools a chat request offers and may be answered with: all of <see cref="Offered"/>'s under
    /// tool_choice "auto" and "required", the one named by {"type": "function", ...}. <see cref="Required"/>:
    /// the reply must be a call.
    /// </summary>
    sealed record ToolUse(IReadOnlyList<ChatTool> Offered, bool Required);

    /// <summary>The most choices one request may ask for (n); more than the free KV slots wait in the queue.</summary>
    public const int MaxChoices = 16;

    /// <summary>Reads and checks the body of a generation request (an <see cref="ApiError"/> names the field at fault).</summary>
    async Task<ParsedRequest> Parse(HttpContext c, OpenAiEndpoint endpoint)
    {
        CheckContentType(c);
        using var doc = await ReadBody(c);
        var body = doc.RootElement;
        if (body.ValueKind != JsonValueKind.Object)
            throw new ApiError(400, "the request body must be a JSON object", null);
        if (Optional(body, "model") is { } m)
        {
            if (m.ValueKind != JsonValueKind.String)
                throw new ApiError(400, $"model must be a string, got {Kind(m)}; this server serves '{options.ModelId}'", "model");
            string model = Text(m, "model");
            if (model != options.ModelId)
                throw new ApiError(404, $"the model '{Printable(model)}' does not exist; this server serves '{options.ModelId}' (GET /v1/models)", "model", "model_not_found");
        }
        RefuseUnsupported(body);
        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = Optional(body, "stream_options") is { ValueKind: JsonValueKind.Object } so && Bool(so, "include_usage") == true;
        var tools = endpoint == OpenAiEndpoint.Chat ? Tools(body) : RefuseTools(body);
        var prompt = endpoint == OpenAiEndpoint.Chat ? ChatPrompt(body, tools.Prompt) : CompletionPrompt(body);
        int room = engine.Advanced.Model.MaxSeq - prompt.Count;
        string maxField = endpoint.MaxTokensField(body);
        int? maxTokens = Int(body, maxField);
        // OpenAI's echo (completions): the prompt comes back before the completion; with max_tokens 0, alone.
        Echo? echo = endpoint == OpenAiEndpoint.Completions && Bool(body, "echo") == true ? new Echo(maxTokens == 0) : null;
        if (echo is { Only: true })
            maxTokens = 1;
        if (maxTokens is < 1)
            throw new ApiError(400, $"{maxField} must be at least 1{(endpoint == OpenAiEndpoint.Completions ? " (0 only with echo: true)" : "")}, got {maxTokens}", maxField);
        if (room < 1)
            throw new ApiError(400, $"the prompt has {prompt.Count} tokens and the context holds {engine.Advanced.Model.MaxSeq} (the server's {Setting(EngineParameter.MaxSeqLen)}); shorten the prompt", endpoint.PromptField, "context_length_exceeded");
        // In long: a max_tokens near 2^31 would wrap the sum negative and pass.
        if (maxTokens is int asked && (long)prompt.Count + asked > engine.Advanced.Model.MaxSeq)
            throw new ApiError(400, $"the prompt's {prompt.Count} tokens + {maxField} {asked} = {(long)prompt.Count + asked} exceeds the context length of {engine.Advanced.Model.MaxSeq} " +
                $"(the server's {Setting(EngineParameter.MaxSeqLen)} {engine.Advanced.Model.MaxSeq}); lower {maxField} to at most {room} or shorten the prompt", maxField, "context_length_exceeded");
        var settings = new GenerationSettings
        {
            MaxNewTokens = maxTokens ?? endpoint.DefaultMaxTokens(room),
            Sampling = Sampling(body),
            StopStrings = Stops(body),
            IgnoreEos = Bool(body, "ignore_eos") ?? false, // vLLM's extension, for benchmarks
            Logprobs = endpoint.LogprobsAsked(body),
            LogitBias = LogitBias(body, engine.Advanced.Model.Config.VocabSize),
        };
        if (echo is not null && settings.Logprobs is int k)
            settings = settings with { PromptLogprobs = k };
        // Structured output: tool_choice required (or one named function) constrains the reply to a call;
        // else response_format, when it asks for JSON; else, under tool_choice auto, a reply that begins a
        // call (its first character '{') is constrained to one from there (not with ignore_eos: a call ends
        // with the end-of-sequence token).
        var grammar = tools.Use is { Required: true } use ? JsonGrammar.ForToolCall(use.Offered) : ResponseFormat(body);
        if (grammar is null && tools.Use is { Required: false } auto && !settings.IgnoreEos)
            grammar = JsonGrammar.ForToolCallOrText(auto.Offered);
        if (grammar is not null)
        {
            // The engine's checks, in this request's own fields.
            string what = tools.Use is { Required: true } ? "a required tool call" : "response_format";
            if (settings.IgnoreEos)
                throw new ApiError(400, $"ignore_eos cannot be used with {what}: structured output ends the reply with an end-of-sequence token; leave ignore_eos out", "ignore_eos");
            if (settings.MaxNewTokens < grammar.MinBytes)
                throw new ApiError(400, $"{maxField} {settings.MaxNewTokens} is too few for {what}: its shortest JSON text has {grammar.MinBytes} bytes; allow at least {grammar.MinBytes}", maxField);
            settings = settings with { ResponseFormat = grammar };
        }
        if (settings.Logprobs is not null && engine.Tokenizer is null)
            throw new ApiError(400, "logprobs need the model's tokenizer to name the tokens, and this server has none", "logprobs");
        int n = Optional(body, "n") is { } nv
            ? nv.ValueKind == JsonValueKind.Number && nv.TryGetInt32(out int nn) && nn >= 1 && nn <= MaxChoices ? nn
                : throw new ApiError(400, $"n must be a whole number from 1 to {MaxChoices}, got {nv.GetRawText()}", "n")
            : 1;
        return new ParsedRequest(prompt, settings, stream, includeUsage, n, tools.Use, echo);
    }

    async Task Generate(HttpContext c, OpenAiEndpoint endpoint)
    {
        ScheduledRequest[] handles;
        CancellationToken cancelled; // the client left or shutdown cancelled the request
        bool stream;
        bool includeUsage;
        ToolUse? tools;
        Echo? echo;
        string id = endpoint.IdPrefix + Guid.NewGuid().ToString("N")[..24];
        try
        {
            var parsed = await Parse(c, endpoint);
            (stream, includeUsage, tools) = (parsed.Stream, parsed.IncludeUsage, parsed.Tools);
            var cancel = CancellationTokenSource.CreateLinkedTokenSource(c.RequestAborted, stopping.Token);
            c.Response.RegisterForDispose(cancel);
            cancelled = cancel.Token;
            // n choices: one group of the prompt, prefilled once, choice i drawing random stream i of the request's seed.
            handles = parsed.N == 1 ? [engine.Submit(parsed.Prompt, parsed.Settings, cancelled)] : engine.SubmitChoices(parsed.Prompt, parsed.N, parsed.Settings, cancelled).ToArray();
            echo = parsed.Echo;
        }
        catch (ApiError e)
        {
            await Error(c, e.Status, e.Message, e.Type, e.Param, e.Code);
            return;
        }
        catch (EngineArgumentException e)
        {
            var (param, code) = e.Parameter switch
            {
                EngineParameter.MaxSeqLen => ("max_tokens", "context_length_exceeded"),
                { } p => (Field(p), (string?)null),
                null => (null, null),
            };
            await Error(c, 400, EngineParameters.Render(e.Template, Field), "invalid_request_error", param, code);
            return;
        }
        catch (QueueFullException e)
        {
            c.Response.Headers.RetryAfter = "1";
            await Error(c, 429, e.Message, "rate_limit_error", null, "queue_full");
            return;
        }

        var handle = handles[0];
        Log($"{c.Request.Method} {c.Request.Path} request {handle.Id}: {handle.Request.PromptTokens.Count} prompt tokens, max {handle.Request.Settings.MaxNewTokens}{(handles.Length > 1 ? $", n {handles.Length}" : "")}{(stream ? ", stream" : "")}");
        try
        {
            // Waiting on `cancelled` too: a cancelled request answers at once, not after the
            // scheduler's current step (tens of seconds per step on a loaded CPU).
            if (stream)
                await Stream(c, handles, endpoint, id, includeUsage, tools, echo, cancelled);
            else
            {
                var results = await Task.WhenAll(handles.Select(h => h.Completion.WaitAsync(cancelled)));
                for (int i = 0; i < handles.Length; i++)
                    metrics?.Finished(handles[i], results[i]);
                var choices = results.Select(r => ToolCall(r.Text, tools) is { } call
                    ? new OpenAiEndpoint.Choice(r, "tool_calls", null, call)
                    : echo is not null ? Echoed(r, echo)
                    : new OpenAiEndpoint.Choice(r, Finish(r.FinishReason), r.Logprobs is { } lps ? endpoint.Logprobs(lps, engine.Tokenizer!, 0) : null)).ToArray();
                await Write(c, 200, endpoint.Response(id, DateTimeOffset.UtcNow.ToUnixTimeSeconds(), options.ModelId, choices, Usage(results, echo)));
            }
        }
        catch (Exception) when (c.RequestAborted.IsCancellationRequested)
        {
            // The client left: its request is cancelled and its slot free.
            foreach (var h in handles)
                h.Cancel();
            Log($"request {handle.Id} cancelled: the client left");
        }
        catch (Exception e)
        {
            // Shutdown cancelled it after the grace period, or generation failed: the client learns
            // why, as a JSON error before the first byte, else as an error event ending the stream.
            foreach (var h in handles)
                h.Cancel();
            var (status, message, type, param, code) = stopping.IsCancellationRequested && e is OperationCanceledException
                ? (503, $"the server is shutting down and cancelled this request after its grace period of {options.ShutdownGrace.TotalSeconds:0.###} s; retry after the restart",
                    "server_error", (string?)null, "shutting_down")
                : (500, "generation failed: " + (e is IEngineMessage em ? EngineParameters.Render(em.Template, Field) : "an internal error (the server's log has the details)"),
                    "server_error", null, "generation_failed");
            Log($"request {handle.Id} failed: {e.GetType().Name}: {e.Message}");
            try
            {
                if (!c.Response.HasStarted)
                    await Error(c, status, message, type, param, code);
                else if (stream)
                {
                    await c.Response.WriteAsync("data: " + JsonSerializer.Serialize(new { error = new { message, type, param, code } }, Json) + "\n\ndata: [DONE]\n\n", c.RequestAborted);
                    await c.Response.Body.FlushAsync(c.RequestAborted);
                }
            }
            catch (Exception) when (c.RequestAborted.IsCancellationRequested)
            {
            }
            catch (Exception e2) when (e2 is IOException or ObjectDisposedException or InvalidOperationException)
            {
                // The connection is gone; nothing more can be said.
            }
        }
    }

    /// <summary>Usage of a request's choices: the prompt once, the completions summed (OpenAI's count for n > 1; none for echo with max_tokens 0).</summary>
    static object Usage(IReadOnlyList<RequestResult> rs, Echo? echo = null)
    {
        int prompt = rs[0].PromptTokens.Count, completion = echo is { Only: true } ? 0 : rs.Sum(r => r.GeneratedTokens.Count);
        // OpenAI's cached_tokens: the prompt tokens a KV slot already held (prefix reuse), of the first choice.
        return new { prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion, prompt_tokens_details = new { cached_tokens = rs[0].ReusedPromptTokens } };
    }

    static string Finish(FinishReason reason) => reason == FinishReason.Length ? "length" : "stop";

    /// <summary>
    /// The prompt tokens an echo shows: all but a leading BOS (the engine's, not the client's text), each
    /// with its log-probability given those before it (null for a first token that has none before it).
    /// </summary>
    IReadOnlyList<(int Id, TokenLogprobs? Logprobs)> EchoedPrompt(IReadOnlyList<int> prompt, IReadOnlyList<TokenLogprobs?>? logprobs)
    {
        int skip = prompt.Count > 0 && prompt[0] == engine.Tokenizer!.BosId ? 1 : 0;
        return prompt.Skip(skip).Select((t, i) => (t, logprobs?[i + skip])).ToArray();
    }

    /// <summary>An echoed completions choice: the prompt's text, then the completion's (none with max_tokens 0), and their log-probabilities.</summary>
    OpenAiEndpoint.Choice Echoed(RequestResult r, Echo echo)
    {
        var tokenizer = engine.Tokenizer!;
        var shown = EchoedPrompt(r.PromptTokens, r.PromptLogprobs);
        string text = tokenizer.Decode(shown.Select(e => e.Id)) + (echo.Only ? "" : r.Text);
        object? logprobs = r.PromptLogprobs is null ? null
            : OpenAiEndpoint.LegacyLogprobs([.. shown, .. echo.Only ? [] : r.Logprobs!.Select(l => (l.Id, (TokenLogprobs?)l))], tokenizer, 0);
        return new OpenAiEndpoint.Choice(r with { Text = text }, echo.Only ? "length" : Finish(r.FinishReason), logprobs);
    }

    /// <summary>The tool call a reply is (with a fresh call id), or null when it is text (or the request offered no tools).</summary>
    static ChatToolCall? ToolCall(string reply, ToolUse? tools) =>
        tools is null ? null
            : ToolCallFormat.Parse(reply, tools.Offered) is { } call ? call with { Id = NewCallId() } : null;

    static string NewCallId() => "call_" + Guid.NewGuid().ToString("N")[..24];

    async Task Stream(HttpContext c, ScheduledRequest[] handles, OpenAiEndpoint endpoint, string id, bool includeUsage, ToolUse? tools, Echo? echo, CancellationToken cancelled)
    {
        c.Response.StatusCode = 200;
        c.Response.ContentType = "text/event-stream";
        c.Response.Headers.CacheControl = "no-cache";
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string model = options.ModelId;
        var ct = c.RequestAborted;
        if (endpoint.OpensStream)
        {
            for (int i = 0; i < handles.Length; i++)
                await Event(c, endpoint.Chunk(id, created, model, null, null, index: i), ct);
        }
        else
            await c.Response.Body.FlushAsync(ct);
        // The choices' tokens in the order they come, each chunk naming its choice's index.
        var merged = System.Threading.Channels.Channel.CreateUnbounded<(int Index, GeneratedToken Token)>();
        var readers = handles.Select(async (h, i) =>
        {
            await foreach (var token in h.Tokens.ReadAllAsync(cancelled))
                await merged.Writer.WriteAsync((i, token), cancelled);
        }).ToArray();
        _ = Task.WhenAll(readers).ContinueWith(t => merged.Writer.TryComplete(t.Exception?.InnerException), TaskScheduler.Default);
        var offsets = new int[handles.Length];
        // With tools, a reply that begins with '{' may be a call: its chunks are held back until it ends
        // (then it is one tool_calls chunk) or shows itself to be text (then they go out as they were).
        var holds = handles.Select(_ => tools is null ? null : new ToolCallHold<(string Text, object? Logprobs)>(tools.Offered)).ToArray();
        await foreach (var (i, token) in merged.Reader.ReadAllAsync(cancelled))
        {
            if (echo is not null && token.Index == 0)
            {
                // The echoed prompt: one chunk before the completion's first.
                var shown = EchoedPrompt(handles[i].Request.PromptTokens, token.PromptLogprobs);
                string prompt = engine.Tokenizer!.Decode(shown.Select(e => e.Id));
                await Event(c, endpoint.Chunk(id, created, model, prompt, null, token.PromptLogprobs is null ? null : OpenAiEndpoint.LegacyLogprobs(shown, engine.Tokenizer!, 0), i), ct);
                offsets[i] += prompt.Length;
                if (echo.Only)
                {
                    await Event(c, endpoint.Chunk(id, created, model, null, "length", index: i), ct);
                    continue;
                }
            }
            // A token asked for with its log-probabilities has a chunk of its own, even when its text is held back.
            object? logprobs = token.Logprobs is { } lp ? endpoint.Logprobs([lp], engine.Tokenizer!, offsets[i]) : null;
            offsets[i] += token.Text.Length;
            var (send, call) = holds[i] is { } hold
                ? hold.Add(token.Text, (token.Text, logprobs), last: token.FinishReason is not null)
                : ([(token.Text, logprobs)], null);
            if (call is not null)
            {
                await Event(c, OpenAiEndpoint.ToolCallChunk(id, created, model, call with { Id = NewCallId() }, i), ct);
                await Event(c, endpoint.Chunk(id, created, model, null, "tool_calls", index: i), ct);
                continue;
            }
            foreach (var (text, lps) in send)
                if (text.Length > 0 || lps is not null)
                    await Event(c, endpoint.Chunk(id, created, model, text, null, lps, i), ct);
            if (token.FinishReason is { } reason)
                await Event(c, endpoint.Chunk(id, created, model, null, Finish(reason), index: i), ct);
        }
        var results = await Task.WhenAll(handles.Select(h => h.Completion.WaitAsync(cancelled)));
        for (int i = 0; i < handles.Length; i++)
            metrics?.Finished(handles[i], results[i]);
        if (includeUsage)
            await Event(c, new { id, @object = endpoint.ChunkObject, created, model, choices = Array.Empty<object>(), usage = Usage(results, echo) }, ct);
        await c.Response.WriteAsync("data: [DONE]\n\n", ct);
        await c.Response.Body.FlushAsync(ct);
    }

    static async Task Event(HttpContext c, object chunk, CancellationToken ct)
    {
        await c.Response.WriteAsync("data: " + JsonSerializer.Serialize(chunk, Json) + "\n\n", ct);
        await c.Response.Body.FlushAsync(ct);
    }

    // ---- request parsing -------------------------------------------------------------------------

    async Task<JsonDocument> ReadBody(HttpContext c)
    {
        if (c.Request.ContentLength is long declared && declared > options.MaxBodyBytes)
            throw new ApiError(413, $"the request body has {declared} bytes, more than the limit of {options.MaxBodyBytes}; send a shorter prompt", null, "request_too_large");
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await c.Request.Body.ReadAsync(chunk, c.RequestAborted)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > options.MaxBodyBytes)
                throw new ApiError(413, $"the request body is over the limit of {options.MaxBodyBytes} bytes; send a shorter prompt", null, "request_too_large");
        }
        try
        {
            return JsonDocument.Parse(buffer.ToArray());
        }
        catch (JsonException e)
        {
            throw new ApiError(400, $"the request body is not valid JSON: {e.Message}", null);
        }
    }

    /// <summary>Refuses a body that a browser could send cross-site without a preflight (CSRF): only application/json is read.</summary>
    static void CheckContentType(HttpContext c)
    {
        string? type = c.Request.ContentType;
        if (type is null || !Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(type, out var media)
            || !(media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase) || media.MediaType.Value!.EndsWith("+json", StringComparison.OrdinalIgnoreCase)))
            throw new ApiError(415, $"the request body must be JSON with the header 'Content-Type: application/json'; got {(type is null ? "no Content-Type" : $"'{Printable(type)}'")}",
                null, "unsupported_media_type");
    }

    /// <summary>
    /// OpenAI parameters this server does not implement, and the values that mean "not used". A request
    /// giving one any other value gets 400 naming it, never a silently different answer.
    /// </summary>
    static readonly (string Name, string NoOp, Func<JsonElement, bool> IsNoOp)[] Unsupported =
    [
        ("best_of", "1", v => v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) && i == 1),
        ("suffix", "null or \"\"", v => v.ValueKind == JsonValueKind.String && v.GetRawText() == "\"\""),
        ("functions", "[] or null", v => v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 0),
        ("function_call", "\"none\" or null", v => v.ValueKind == JsonValueKind.String && v.GetRawText() == "\"none\""),
        ("presence_penalty", "0", v => v.ValueKind == JsonValueKind.Number && v.GetDouble() == 0),
        ("frequency_penalty", "0", v => v.ValueKind == JsonValueKind.Number && v.GetDouble() == 0),
        ("modalities", "[\"text\"]", v => v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 1 && v[0].ValueKind == JsonValueKind.String && v[0].GetString() == "text"),
        ("audio", "null", _ => false),
        ("web_search_options", "null", _ => false),
    ];

    /// <summary>The OpenAI parameters refused unless given their no-op value (the README's parameter table lists them).</summary>
    public static IReadOnlyList<string> RefusedParameters { get; } = Unsupported.Select(u => u.Name).ToArray();

    static void RefuseUnsupported(JsonElement body)
    {
        foreach (var (name, noOp, isNoOp) in Unsupported)
            if (Optional(body, name) is { } v && !isNoOp(v))
                throw new ApiError(400, $"{name} is not supported by this server (got {Kind(v)}); leave it out or send {noOp}", name, "unsupported_parameter");
    }

    static string Kind(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        JsonValueKind.String => "a string",
        JsonValueKind.Array => "a list",
        JsonValueKind.Object => "an object",
        _ => v.ValueKind.ToString().ToLowerInvariant(),
    };

    /// <summary>A JSON string's text; a lone surrogate escape or bytes that are not UTF-8 are a 400 naming <paramref name="field"/>.</summary>
    static string Text(JsonElement v, string field)
    {
        try
        {
            return v.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw new ApiError(400, $"{field} is not valid Unicode text (it holds a lone surrogate escape such as \\ud800 or bytes that are not UTF-8); send UTF-8 text", field, "invalid_unicode");
        }
    }

    static JsonElement? Optional(JsonElement body, string name) =>
        body.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    static double? Number(JsonElement body, string name) => Optional(body, name) is not { } v ? null
        : v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new ApiError(400, $"{name} must be a number, got {v.ValueKind.ToString().ToLowerInvariant()}", name);

    static int? Int(JsonElement body, string name) => Optional(body, name) is not { } v ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw new ApiError(400, $"{name} must be an integer", name);

    static bool? Bool(JsonElement body, string name) => Optional(body, name) is not { } v ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw new ApiError(400, $"{name} must be true or false", name);

    static SamplingOptions Sampling(JsonElement body)
    {
        var d = new SamplingOptions();
        var s = new SamplingOptions
        {
            Temperature = (float)(Number(body, "temperature") ?? d.Temperature),
            TopP = (float)(Number(body, "top_p") ?? d.TopP),
            TopK = Int(body, "top_k") ?? d.TopK,
            MinP = (float)(Number(body, "min_p") ?? d.MinP),
            RepetitionPenalty = (float)(Number(body, "repetition_penalty") ?? d.RepetitionPenalty),
            Seed = Optional(body, "seed") is { } seed
                ? seed.ValueKind == JsonValueKind.Number && seed.TryGetInt64(out long v) ? unchecked((ulong)v) : throw new ApiError(400, "seed must be an integer", "seed")
                : null,
        };
        if (s.Temperature > 2f)
            throw new ApiError(400, $"temperature must be between 0 and 2, got {s.Temperature}", "temperature");
        return s;
    }

    static IReadOnlyList<string> Stops(JsonElement body)
    {
        if (Optional(body, "stop") is not { } stop)
            return [];
        if (stop.ValueKind == JsonValueKind.String)
            return [Text(stop, "stop")];
        if (stop.ValueKind == JsonValueKind.Array && stop.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String))
            return stop.EnumerateArray().Select(e => Text(e, "stop")).Where(x => x.Length > 0).ToArray();
        throw new ApiError(400, "stop must be a string or a list of strings", "stop");
    }

    IReadOnlyList<int> CompletionPrompt(JsonElement body)
    {
        if (Optional(body, "prompt") is not { } p)
            throw new ApiError(400, "prompt is required: a string (or a list of token ids)", "prompt");
        if (p.ValueKind == JsonValueKind.String)
            return engine.Encode(Text(p, "prompt"));
        if (p.ValueKind == JsonValueKind.Array)
        {
            var items = p.EnumerateArray().ToArray();
            if (items.Length == 1 && items[0].ValueKind == JsonValueKind.String)
                return engine.Encode(Text(items[0], "prompt"));
            if (items.Length > 0 && items.All(e => e.ValueKind == JsonValueKind.Number))
                return items.Select(e => e.TryGetInt32(out int t) ? t : throw new ApiError(400, "prompt token ids must be integers", "prompt")).ToArray();
            throw new ApiError(400, "prompt must be one string or one list of token ids; send one request per prompt", "prompt");
        }
        throw new ApiError(400, "prompt must be a string or a list of token ids", "prompt");
    }

    /// <summary>The tools of a chat request: those written into the prompt, and how the reply may use them (null: not at all).</summary>
    static (IReadOnlyList<ChatTool>? Prompt, ToolUse? Use) Tools(JsonElement body)
    {
        var tools = new List<ChatTool>();
        if (Optional(body, "tools") is { } list)
        {
            RequireUnicode(list, "tools");
            if (list.ValueKind != JsonValueKind.Array)
                throw new ApiError(400, "tools must be a list of {\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}", "tools");
            int i = 0;
            foreach (var t in list.EnumerateArray())
            {
                try
                {
                    var tool = ChatTool.FromOpenAi(t);
                    if (tools.Any(x => x.Name == tool.Name))
                        throw new ArgumentException($"two tools are named '{tool.Name}'; give each function its own name");
                    // strict: the call must follow the schema, so one the grammar cannot enforce is refused
                    // (without strict its call's parameters are any object, as the README says).
                    if (t.GetProperty("function").TryGetProperty("strict", out var strict) && strict.ValueKind == JsonValueKind.True &&
                        !JsonGrammar.ParametersSupported(tool, out string? why))
                        throw new ApiError(400, $"function '{tool.Name}' is strict, and its parameters schema cannot be enforced: {why}; drop strict, or keep to the supported keywords",
                            $"tools[{i}].function.parameters", "unsupported_schema");
                    tools.Add(tool);
                }
                catch (ArgumentException e)
                {
                    throw new ApiError(400, e.Message, $"tools[{i}]");
                }
                i++;
            }
        }
        var choice = Optional(body, "tool_choice");
        if (tools.Count == 0)
        {
            if (choice is { } c && !(c.ValueKind == JsonValueKind.String && c.GetString() == "none"))
                throw new ApiError(400, "tool_choice needs tools: give the functions the model may call in tools, or leave tool_choice out", "tool_choice");
            return (null, null);
        }
        if (choice is null)
            return (tools, new ToolUse(tools, Required: false));
        if (choice.Value.ValueKind == JsonValueKind.String)
        {
            return choice.Value.GetString() switch
            {
                "auto" => (tools, new ToolUse(tools, Required: false)),
                "required" => (tools, new ToolUse(tools, Required: true)),
                "none" => (null, null), // no call wanted: the prompt does not offer them (the plain Llama 3 format)
                _ => throw new ApiError(400, $"tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {choice.Value.GetRawText()}", "tool_choice"),
            };
        }
        if (choice.Value.ValueKind == JsonValueKind.Object && Optional(choice.Value, "type") is { ValueKind: JsonValueKind.String } type && type.GetString() == "function"
            && Optional(choice.Value, "function") is { ValueKind: JsonValueKind.Object } f && Optional(f, "name") is { ValueKind: JsonValueKind.String } name)
        {
            var named = tools.FirstOrDefault(t => t.Name == name.GetString())
                ?? throw new ApiError(400, $"tool_choice names the function '{Printable(name.GetString())}', which is not in tools ({string.Join(", ", tools.Select(t => t.Name))})", "tool_choice");
            return (tools, new ToolUse([named], Required: true));
        }
        throw new ApiError(400, $"tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {Kind(choice.Value)}", "tool_choice");
    }

    /// <summary>
    /// logit_bias: {"token id": bias, ...}, ids of the vocabulary, biases from -100 to 100; null when
    /// absent or empty.
    /// </summary>
    static IReadOnlyDictionary<int, float>? LogitBias(JsonElement body, int vocabSize)
    {
        const string field = "logit_bias";
        if (Optional(body, field) is not { } v)
            return null;
        RequireUnicode(v, field);
        if (v.ValueKind != JsonValueKind.Object)
            throw new ApiError(400, $"logit_bias must be an object mapping token ids to biases from -100 to 100, e.g. {{\"1734\": -100}}, got {Kind(v)}", field);
        var bias = new Dictionary<int, float>();
        foreach (var p in v.EnumerateObject())
        {
            if (!int.TryParse(p.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id >= vocabSize)
                throw new ApiError(400, $"logit_bias key {JsonSerializer.Serialize(p.Name.Length > 40 ? p.Name[..40] + "..." : p.Name)} is not a token id of this model (0 to {vocabSize - 1})", field);
            if (bias.ContainsKey(id))
                throw new ApiError(400, $"logit_bias gives token {id} twice; give each token one bias", field);
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetDouble(out double b) || Math.Abs(b) > GenerationSettings.MaxLogitBias)
                throw new ApiError(400, $"logit_bias for token {id} must be a number from -100 to 100, got {p.Value.GetRawText()}", field);
            bias[id] = (float)b;
        }
        return bias.Count == 0 ? null : bias;
    }

    /// <summary>
    /// The grammar of response_format: null for {"type": "text"} or none; any JSON object for
    /// {"type": "json_object"}; the schema's for {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
    /// (a schema outside the supported subset is a 400 naming its keywords).
    /// </summary>
    static JsonGrammar? ResponseFormat(JsonElement body)
    {
        const string field = "response_format";
        if (Optional(body, field) is not { } format)
            return null;
        RequireUnicode(format, field);
        if (format.ValueKind != JsonValueKind.Object || Optional(format, "type") is not { ValueKind: JsonValueKind.String } type)
            throw new ApiError(400, "response_format must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}", field);
        switch (type.GetString())
        {
            case "text":
                return null;
            case "json_object":
                return JsonGrammar.AnyObject;
            case "json_schema":
                if (Optional(format, "json_schema") is not { ValueKind: JsonValueKind.Object } spec || Optional(spec, "schema") is not { } schema)
                    throw new ApiError(400, "response_format json_schema needs \"json_schema\": {\"name\": ..., \"schema\": {...}}", field + ".json_schema");
                try
                {
                    return JsonGrammar.FromSchema(schema);
                }
                catch (UnsupportedSchemaException e)
                {
                    throw new ApiError(400, e.Message, field + ".json_schema.schema", "unsupported_schema");
                }
                catch (JsonSchemaException e)
                {
                    throw new ApiError(400, e.Message, field + ".json_schema.schema");
                }
            default:
                throw new ApiError(400, $"response_format type must be \"text\", \"json_object\" or \"json_schema\", got {Printable(type.GetString())}", field + ".type");
        }
    }

    /// <summary>
    /// Checks that every string and property name in <paramref name="value"/> is Unicode (a lone surrogate
    /// escape such as "\ud800" is not), so what reads it later cannot fail; a 400 names <paramref name="field"/>.
    /// </summary>
    static void RequireUnicode(JsonElement value, string field)
    {
        try
        {
            Walk(value);
        }
        catch (InvalidOperationException)
        {
            throw new ApiError(400, $"{field} holds a string that is not valid Unicode (a lone surrogate escape such as \"\\ud800\"); send UTF-8 text", field, "invalid_unicode");
        }

        static void Walk(JsonElement e)
        {
            switch (e.ValueKind)
            {
                case JsonValueKind.String:
                    _ = e.GetString();
                    break;
                case JsonValueKind.Array:
                    foreach (var item in e.EnumerateArray())
                        Walk(item);
                    break;
                case JsonValueKind.Object:
                    foreach (var p in e.EnumerateObject())
                    {
                        _ = p.Name;
                        Walk(p.Value);
                    }
                    break;
            }
        }
    }

    /// <summary>Completions take no tools: a request that gives some is told to use chat.</summary>
    static (IReadOnlyList<ChatTool>? Prompt, ToolUse? Use) RefuseTools(JsonElement body)
    {
        foreach (string field in new[] { "tools", "tool_choice" })
            if (Optional(body, field) is not null)
                throw new ApiError(400, $"{field} is a parameter of /v1/chat/completions (tools are offered in the chat format); send the request there", field);
        return (null, null);
    }

    IReadOnlyList<int> ChatPrompt(JsonElement body, IReadOnlyList<ChatTool>? tools)
    {
        if (Optional(body, "messages") is not { ValueKind: JsonValueKind.Array } list || list.GetArrayLength() == 0)
            throw new ApiError(400, "messages is required: a non-empty list of {\"role\", \"content\"}", "messages");
        var messages = new List<ChatMessage>();
        int index = 0;
        foreach (var m in list.EnumerateArray())
        {
            string at = $"messages[{index++}]";
            if (m.ValueKind != JsonValueKind.Object || Optional(m, "role") is not { ValueKind: JsonValueKind.String } role)
                throw new ApiError(400, "every message needs a string role (system, user, assistant, tool)", at + ".role");
            string r = Text(role, at + ".role");
            string content = Optional(m, "content") switch
            {
                { ValueKind: JsonValueKind.String } s => Text(s, at + ".content"),
                { ValueKind: JsonValueKind.Array } parts => string.Concat(parts.EnumerateArray().Select((part, i) =>
                    part.ValueKind == JsonValueKind.Object && Optional(part, "type") is { ValueKind: JsonValueKind.String } type && Text(type, $"{at}.content[{i}].type") == "text"
                        && Optional(part, "text") is { ValueKind: JsonValueKind.String } t
                        ? Text(t, $"{at}.content[{i}].text")
                        : throw new ApiError(400, "only text content parts are supported: {\"type\": \"text\", \"text\": \"...\"}", $"{at}.content[{i}]"))),
                null => "",
                _ => throw new ApiError(400, "message content must be a string or a list of text parts", at + ".content"),
            };
            if (r is not ("system" or "user" or "assistant" or "tool" or "ipython"))
                throw new ApiError(400, $"unknown message role '{Printable(r)}'; use system, user, assistant or tool", at + ".role");
            var message = new ChatMessage(ChatRole.Parse(r), content);
            if (Optional(m, "tool_calls") is { } calls)
            {
                if (r != "assistant")
                    throw new ApiError(400, "only assistant messages carry tool_calls", at + ".tool_calls");
                message = message with { ToolCalls = ToolCalls(calls, at + ".tool_calls") };
            }
            messages.Add(message);
        }
        try
        {
            return engine.EncodeChat(messages, tools: tools);
        }
        catch (ArgumentException e)
        {
            throw new ApiError(400, e.Message, "messages");
        }
    }

    /// <summary>An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments": JSON text}}].</summary>
    static IReadOnlyList<ChatToolCall> ToolCalls(JsonElement calls, string at)
    {
        if (calls.ValueKind != JsonValueKind.Array)
            throw new ApiError(400, "tool_calls must be a list of {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}", at);
        var list = new List<ChatToolCall>();
        int i = 0;
        foreach (var call in calls.EnumerateArray())
        {
            string here = $"{at}[{i++}]";
            if (call.ValueKind != JsonValueKind.Object || Optional(call, "function") is not { ValueKind: JsonValueKind.Object } f
                || Optional(f, "name") is not { ValueKind: JsonValueKind.String } name)
                throw new ApiError(400, "a tool call needs a function with a name: {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}", here);
            string argumentsField = here + ".function.arguments";
            string arguments = Optional(f, "arguments") switch
            {
                null => "{}",
                { ValueKind: JsonValueKind.String } a => Text(a, argumentsField),
                { ValueKind: JsonValueKind.Object } o => o.GetRawText(), // some clients send the object itself
                _ => throw new ApiError(400, "a tool call's arguments must be a JSON object's text", argumentsField),
            };
            try
            {
                using var parsed = JsonDocument.Parse(arguments);
                if (parsed.RootElement.ValueKind != JsonValueKind.Object)
                    throw new ApiError(400, "a tool call's arguments must be a JSON object's text, such as \"{\\\"city\\\": \\\"Oslo\\\"}\"", argumentsField);
                RequireUnicode(parsed.RootElement, argumentsField);
            }
            catch (JsonException e)
            {
                throw new ApiError(400, $"a tool call's arguments are not JSON ({e.Message})", argumentsField);
            }
            string callName = Text(name, here + ".function.name");
            if (callName.Length is 0 or > 64 || !callName.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '-'))
                throw new ApiError(400, "a function's name must be 1 to 64 letters, digits, underscores or dashes", here + ".function.name");
            list.Add(new ChatToolCall(callName, arguments) { Id = Optional(call, "id") is { ValueKind: JsonValueKind.String } id ? id.GetString() : null });
        }
        return list;
    }

    /// <summary>The request field that sets an engine parameter, for error messages.</summary>
    string Field(EngineParameter p) => p switch
    {
        EngineParameter.MaxNewTokens => "max_tokens",
        EngineParameter.Temperature => "temperature",
        EngineParameter.TopK => "top_k",
        EngineParameter.TopP => "top_p",
        EngineParameter.MinP => "min_p",
        EngineParameter.RepetitionPenalty => "repetition_penalty",
        EngineParameter.Seed => "seed",
        EngineParameter.Tokens => "prompt",
        _ => "the server's " + Setting(p),
    };

    /// <summary>What the server's operator calls an engine setting (<see cref="OpenAiEndpointOptions.ParameterName"/>).</summary>
    string Setting(EngineParameter p) => options.ParameterName?.Invoke(p) ?? p.ToString();

    // ---- responses ---------------------------------------------------------------------------------

    internal static Task Write(HttpContext c, int status, object value)
    {
        c.Response.StatusCode = status;
        c.Response.ContentType = "application/json";
        return HttpMethods.IsHead(c.Request.Method) ? Task.CompletedTask : c.Response.WriteAsync(JsonSerializer.Serialize(value, Json));
    }

    internal static Task Error(HttpContext c, int status, string message, string type, string? param, string? code = null) =>
        Write(c, status, new { error = new { message, type, param, code } });
}
