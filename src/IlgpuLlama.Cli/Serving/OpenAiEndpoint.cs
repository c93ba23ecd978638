using System.Text.Json;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;

namespace IlgpuLlama.Cli.Serving;

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

    /// <summary>The whole response of a request that finished.</summary>
    public abstract object Response(string id, long created, string model, RequestResult r, string finish, object usage);

    /// <summary>A stream chunk carrying <paramref name="text"/> (null: the opening chunk) or the finish reason.</summary>
    public abstract object Chunk(string id, long created, string model, string? text, string? finish);

    /// <summary>The object type of stream chunks (also of the final usage chunk).</summary>
    public abstract string ChunkObject { get; }

    /// <summary>Whether the stream opens with a chunk of its own (chat's assistant role).</summary>
    public virtual bool OpensStream => false;

    sealed class CompletionsEndpoint : OpenAiEndpoint
    {
        public override string Path => "/v1/completions";
        public override string IdPrefix => "cmpl-";
        public override string PromptField => "prompt";

        // OpenAI's default for completions is 16 tokens.
        public override int DefaultMaxTokens(int room) => Math.Min(16, room);

        public override object Response(string id, long created, string model, RequestResult r, string finish, object usage) =>
            new { id, @object = "text_completion", created, model, choices = new[] { new { index = 0, text = r.Text, logprobs = (object?)null, finish_reason = finish } }, usage };

        public override object Chunk(string id, long created, string model, string? text, string? finish) =>
            new { id, @object = ChunkObject, created, model, choices = new[] { new { index = 0, text = text ?? "", logprobs = (object?)null, finish_reason = finish } } };

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

        public override object Response(string id, long created, string model, RequestResult r, string finish, object usage) =>
            new { id, @object = "chat.completion", created, model, choices = new[] { new { index = 0, message = new { role = "assistant", content = r.Text }, logprobs = (object?)null, finish_reason = finish } }, usage };

        public override object Chunk(string id, long created, string model, string? text, string? finish)
        {
            object delta = text is null ? (finish is null ? new { role = "assistant", content = "" } : new { }) : new { content = text };
            return new { id, @object = ChunkObject, created, model, choices = new[] { new { index = 0, delta, logprobs = (object?)null, finish_reason = finish } } };
        }

        public override string ChunkObject => "chat.completion.chunk";

        public override bool OpensStream => true;
    }
}
