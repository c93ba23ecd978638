using System.Text.Json;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Text;

namespace IlgpuLlama.Server;

/// <summary>
/// What differs between POST /v1/completions and POST /v1/chat/completions: the prompt field, the
/// name of the token limit and its default, and the shapes of the response and its stream chunks.
/// Everything else (validation, submission, streaming, errors) is <see cref="OpenAiServer"/>'s one path.
/// </summary>
abstract class OpenAiEndpoint
{
    /// <summary>POST /v1/completions: a text prompt (or token ids), text out.</summary>
    public static OpenAiEndpoint Completions { get; } = new CompletionsEndpoint();

    /// <summary>POST /v1/chat/completions: messages in the Llama 3 chat format, an assistant message out.</summary>
    public static OpenAiEndpoint Chat { get; } = new ChatEndpoint();

    /// <summary>The route.</summary>
    public abstract string Path { get; }

    /// <summary>Prefix of the response id (cmpl-, chatcmpl-).</summary>
    public abstract string IdPrefix { get; }

    /// <summary>The request field that holds the prompt (named in errors).</summary>
    public abstract string PromptField { get; }

    /// <summary>The request field that limits new tokens.</summary>
    public virtual string MaxTokensField(JsonElement body) => "max_tokens";

    /// <summary>New tokens when the request gives no limit, with <paramref name="room"/> positions left in the context.</summary>
    public abstract int DefaultMaxTokens(int room);

    /// <summary>The request's log-probabilities setting: completions' logprobs k, chat's logprobs true with top_logprobs k (null: none).</summary>
    public abstract int? LogprobsAsked(JsonElement body);

    /// <summary>
    /// The "logprobs" object of a choice for <paramref name="tokens"/> (a response's every token, or a
    /// stream chunk's one), in this endpoint's shape; <paramref name="textOffset"/> is where the first
    /// token's text starts in the choice's text.
    /// </summary>
    public abstract object Logprobs(IReadOnlyList<TokenLogprobs> tokens, LlamaTokenizer tokenizer, int textOffset);

    /// <summary>One finished choice of a request: its result, finish reason and log-probabilities (null when not asked for).</summary>
    public sealed record Choice(RequestResult Result, string Finish, object? Logprobs, ChatToolCall? Call = null);

    /// <summary>A chat stream chunk carrying choice <paramref name="index"/>'s whole tool call (name and arguments at once).</summary>
    public static object ToolCallChunk(string id, long created, string model, ChatToolCall call, int index) => new
    {
        id, @object = "chat.completion.chunk", created, model,
        choices = new[] { new { index, delta = new { tool_calls = new[] { new { index = 0, id = call.Id, type = "function", function = new { name = call.Name, arguments = call.Arguments } } } }, logprobs = (object?)null, finish_reason = (string?)null } },
    };

    /// <summary>The assistant message of a chat choice: its text, or its tool call (content null).</summary>
    protected static object Message(Choice c) => c.Call is { } call
        ? new { role = "assistant", content = (string?)null, tool_calls = new[] { new { id = call.Id, type = "function", function = new { name = call.Name, arguments = call.Arguments } } } }
        : new { role = "assistant", content = (string?)c.Result.Text };

    /// <summary>The whole response of a request whose choices (n of them, indexed in order) finished.</summary>
    public abstract object Response(string id, long created, string model, IReadOnlyList<Choice> choices, object usage);

    /// <summary>A stream chunk of choice <paramref name="index"/> carrying <paramref name="text"/> (null: the opening chunk) or the finish reason, and its token's log-probabilities.</summary>
    public abstract object Chunk(string id, long created, string model, string? text, string? finish, object? logprobs = null, int index = 0);

    /// <summary>
    /// OpenAI's legacy completions logprobs { tokens, token_logprobs, top_logprobs: [{token: logprob}],
    /// text_offset } for <paramref name="tokens"/>, whose text starts at <paramref name="textOffset"/> of the
    /// choice's text; a token without log-probabilities (an echoed prompt's first) has null in
    /// token_logprobs and top_logprobs, as OpenAI gives it.
    /// </summary>
    public static object LegacyLogprobs(IReadOnlyList<(int Id, TokenLogprobs? Logprobs)> tokens, LlamaTokenizer tokenizer, int textOffset)
    {
        var texts = tokens.Select(t => TokenText(tokenizer, t.Id)).ToArray();
        // Offsets into the text the tokens decode to together: a token that ends inside a UTF-8 character
        // adds nothing until the token that completes it (its own text shows U+FFFD).
        var offsets = new int[texts.Length];
        var decoder = new System.Text.UTF8Encoding(false, false).GetDecoder();
        var chars = new char[64];
        for (int i = 0, at = textOffset; i < texts.Length; i++)
        {
            offsets[i] = at;
            byte[] bytes = tokenizer.TokenBytes(tokens[i].Id);
            if (chars.Length < bytes.Length + 4)
                chars = new char[bytes.Length + 4];
            at += decoder.GetChars(bytes, 0, bytes.Length, chars, 0, flush: false);
        }
        return new
        {
            tokens = texts,
            token_logprobs = tokens.Select(t => t.Logprobs?.Logprob).ToArray(),
            top_logprobs = tokens.Select(t =>
            {
                if (t.Logprobs is not { } lp)
                    return null;
                var top = new Dictionary<string, double>();
                foreach (var (id, l) in lp.Top)
                    top.TryAdd(TokenText(tokenizer, id), l);
                return top;
            }).ToArray(),
            text_offset = offsets,
        };
    }

    /// <summary>A token's text as the API shows it (special tokens by name; an incomplete UTF-8 piece as U+FFFD).</summary>
    protected static string TokenText(LlamaTokenizer tokenizer, int id) => tokenizer.Decode([id]);

    /// <summary>The object type of stream chunks (also of the final usage chunk).</summary>
    public abstract string ChunkObject { get; }

    /// <summary>Whether the stream opens with a chunk of its own (chat's assistant role).</summary>
    public virtual bool OpensStream => false;

    /// <summary>A count of most likely tokens (0..20) from a request field.</summary>
    protected static int LogprobsCount(JsonElement v, string field) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int k) && k >= 0 && k <= TokenLogprobs.MaxTop ? k
            : throw new OpenAiEndpoints.ApiError(400, $"{field} must be a whole number from 0 to {TokenLogprobs.MaxTop}, got {v.GetRawText()}", field);

    sealed class CompletionsEndpoint : OpenAiEndpoint
    {
        public override string Path => "/v1/completions";
        public override string IdPrefix => "cmpl-";
        public override string PromptField => "prompt";

        // OpenAI's default for completions is 16 tokens.
        public override int DefaultMaxTokens(int room) => Math.Min(16, room);

        // OpenAI's legacy completions: logprobs k (0..) gives the chosen token's and the k most likely.
        public override int? LogprobsAsked(JsonElement body) =>
            body.TryGetProperty("logprobs", out var v) && v.ValueKind != JsonValueKind.Null ? LogprobsCount(v, "logprobs") : null;

        public override object Logprobs(IReadOnlyList<TokenLogprobs> tokens, LlamaTokenizer tokenizer, int textOffset) =>
            LegacyLogprobs(tokens.Select(t => (t.Id, (TokenLogprobs?)t)).ToArray(), tokenizer, textOffset);

        public override object Response(string id, long created, string model, IReadOnlyList<Choice> choices, object usage) =>
            new { id, @object = "text_completion", created, model, choices = choices.Select((c, i) => new { index = i, text = c.Result.Text, logprobs = c.Logprobs, finish_reason = c.Finish }).ToArray(), usage };

        public override object Chunk(string id, long created, string model, string? text, string? finish, object? logprobs = null, int index = 0) =>
            new { id, @object = ChunkObject, created, model, choices = new[] { new { index, text = text ?? "", logprobs, finish_reason = finish } } };

        public override string ChunkObject => "text_completion";
    }

    sealed class ChatEndpoint : OpenAiEndpoint
    {
        public override string Path => "/v1/chat/completions";
        public override string IdPrefix => "chatcmpl-";
        public override string PromptField => "messages";

        public override string MaxTokensField(JsonElement body) =>
            body.TryGetProperty("max_completion_tokens", out var v) && v.ValueKind != JsonValueKind.Null ? "max_completion_tokens" : "max_tokens";

        // Chat defaults to the rest of the context.
        public override int DefaultMaxTokens(int room) => room;

        // Chat: logprobs true turns them on, top_logprobs k (0..20) adds the k most likely.
        public override int? LogprobsAsked(JsonElement body)
        {
            bool on = body.TryGetProperty("logprobs", out var v) && v.ValueKind != JsonValueKind.Null && (v.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? v.GetBoolean()
                : throw new OpenAiEndpoints.ApiError(400, $"logprobs must be true or false, got {v.GetRawText()}", "logprobs"));
            int? top = body.TryGetProperty("top_logprobs", out var t) && t.ValueKind != JsonValueKind.Null ? LogprobsCount(t, "top_logprobs") : null;
            if (top is not null && !on)
                throw new OpenAiEndpoints.ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs");
            return on ? top ?? 0 : null;
        }

        // { content: [{ token, logprob, bytes, top_logprobs: [{ token, logprob, bytes }] }] }, as OpenAI's chat gives them.
        public override object Logprobs(IReadOnlyList<TokenLogprobs> tokens, LlamaTokenizer tokenizer, int textOffset) => new
        {
            content = tokens.Select(t => new
            {
                token = TokenText(tokenizer, t.Id),
                logprob = t.Logprob,
                bytes = tokenizer.TokenBytes(t.Id).Select(b => (int)b).ToArray(),
                top_logprobs = t.Top.Select(e => new { token = TokenText(tokenizer, e.Id), logprob = e.Logprob, bytes = tokenizer.TokenBytes(e.Id).Select(b => (int)b).ToArray() }).ToArray(),
            }).ToArray(),
        };

        public override object Response(string id, long created, string model, IReadOnlyList<Choice> choices, object usage) =>
            new { id, @object = "chat.completion", created, model, choices = choices.Select((c, i) => new { index = i, message = Message(c), logprobs = c.Logprobs, finish_reason = c.Finish }).ToArray(), usage };

        public override object Chunk(string id, long created, string model, string? text, string? finish, object? logprobs = null, int index = 0)
        {
            object delta = text is null ? (finish is null ? new { role = "assistant", content = "" } : new { }) : new { content = text };
            return new { id, @object = ChunkObject, created, model, choices = new[] { new { index, delta, logprobs, finish_reason = finish } } };
        }

        public override string ChunkObject => "chat.completion.chunk";

        public override bool OpensStream => true;
    }
}
