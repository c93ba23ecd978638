namespace IlgpuLlama.Server;

/// <summary>
/// Settings of the OpenAI-compatible endpoints (<see cref="LlamaServerExtensions.MapOpenAiEndpoints"/>),
/// wherever they are hosted. <see cref="ServerOptions"/> adds the address of the ready-made host.
/// </summary>
public record OpenAiEndpointOptions
{
    /// <summary>
    /// When set, every /v1 request (and /metrics) needs "Authorization: Bearer KEY". An application
    /// with its own authentication leaves it null and puts its policy on the endpoints
    /// (<c>app.MapOpenAiEndpoints().RequireAuthorization()</c>).
    /// </summary>
    public string? ApiKey { get; init; }

    /// <summary>The model id in /v1/models and in responses.</summary>
    public string ModelId { get; init; } = "llama";

    /// <summary>Largest request body; larger ones get 413.</summary>
    public long MaxBodyBytes { get; init; } = 4 << 20;

    /// <summary>
    /// How long the application's shutdown waits for running requests before cancelling them (they
    /// then end with a 503 error); new requests get 503 from the moment shutdown begins.
    /// </summary>
    public TimeSpan ShutdownGrace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Whether GET /metrics serves Prometheus metrics (behind <see cref="ApiKey"/> like /v1); off: not mapped.</summary>
    public bool Metrics { get; init; }

    /// <summary>Whether GET / serves the chat page.</summary>
    public bool ChatPage { get; init; } = true;

    /// <summary>
    /// The name the server's operator knows an engine setting by, for errors that name one (a prompt
    /// longer than the context names the maximum sequence length). <c>serve</c> gives its flags
    /// (<c>--max-seq-len</c>); null: the engine's name (<c>MaxSeqLen</c>).
    /// </summary>
    public Func<EngineParameter, string>? ParameterName { get; init; }

    /// <summary>
    /// Receives one line per request and per lifecycle event. Null: the lines go to the application's
    /// <c>ILogger</c> (category <c>IlgpuLlama.Server</c>) at Information level.
    /// </summary>
    public Action<string>? Log { get; init; }
}

/// <summary>Settings of <see cref="OpenAiServer"/>, the ready-made Kestrel host of the endpoints.</summary>
public sealed record ServerOptions : OpenAiEndpointOptions
{
    /// <summary>Address to bind (loopback unless told otherwise).</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>Port; 0 picks a free one (see <see cref="OpenAiServer.Address"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>
    /// Host names (besides <c>localhost</c> and IP address literals) that requests may carry in their
    /// Host header; others get 400, so a web page cannot reach the server through a DNS name that it
    /// rebinds to this machine. <c>*</c> allows any. (An application hosting the endpoints itself uses
    /// ASP.NET Core's host filtering instead.)
    /// </summary>
    public IReadOnlyList<string> AllowedHosts { get; init; } = [];
}
