using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace IlgpuLlama.Server;

/// <summary>
/// The ready-made host of <see cref="OpenAiEndpoints"/> that <c>ilgpu-llama serve</c> runs: Kestrel on
/// <see cref="ServerOptions.Host"/>:<see cref="ServerOptions.Port"/>, the endpoints of
/// <see cref="LlamaServerExtensions.MapOpenAiEndpoints"/>, and what a server facing browsers needs
/// besides: a DNS-rebinding guard on the Host header (<see cref="ServerOptions.AllowedHosts"/>), and
/// OpenAI-shaped 404 and 405 errors for paths and methods it does not serve. <see cref="StopAsync"/>
/// (SIGINT/SIGTERM in <c>serve</c>) answers new requests with 503, lets running ones finish for
/// <see cref="OpenAiEndpointOptions.ShutdownGrace"/>, then cancels what is left.
/// An application with a pipeline of its own maps the endpoints itself instead (see <see cref="LlamaServerExtensions"/>).
/// </summary>
public sealed class OpenAiServer : IAsyncDisposable
{
    readonly WebApplication app;
    readonly OpenAiEndpoints endpoints;
    readonly ServerOptions options;

    OpenAiServer(WebApplication app, OpenAiEndpoints endpoints, ServerOptions options)
    {
        this.app = app;
        this.endpoints = endpoints;
        this.options = options;
    }

    /// <summary>Where the server listens (the real port when <see cref="ServerOptions.Port"/> was 0).</summary>
    public Uri Address { get; private set; } = new("http://127.0.0.1/");

    /// <summary>Whether shutdown has begun (new requests get 503).</summary>
    public bool IsShuttingDown => endpoints.IsShuttingDown;

    /// <summary>Requests being answered now.</summary>
    public int InFlight => endpoints.InFlight;

    /// <summary>Completes when the server has stopped.</summary>
    public Task Stopped => app.WaitForShutdownAsync();

    /// <summary>Starts listening.</summary>
    public static async Task<OpenAiServer> StartAsync(LlamaEngine engine, ServerOptions options)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddLlamaEngine(engine, options); // checks the options and the tokenizer when the endpoints are made, below
        // The host's clock starts before the drain (grace, then up to 5 s for cancelled requests to say
        // so); what is left is Kestrel's time to finish those responses before it aborts connections.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownGrace + TimeSpan.FromSeconds(15));
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null; // checked per request, so an oversized body gets OpenAI's error shape
            if (IPAddress.TryParse(options.Host, out var ip))
                k.Listen(ip, options.Port);
            else if (options.Host == "localhost")
                k.ListenLocalhost(options.Port);
            else
                throw new ArgumentException($"--host '{options.Host}' is not an IP address; give one such as 127.0.0.1 or 0.0.0.0");
        });
        var app = builder.Build();
        var endpoints = app.Services.GetRequiredService<OpenAiEndpoints>();
        var server = new OpenAiServer(app, endpoints, options);
        app.Use(server.Gate);
        app.MapOpenAiEndpoints();
        app.MapFallback(c => OpenAiEndpoints.Error(c, 404, $"no route {c.Request.Method} {c.Request.Path}; the endpoints are {endpoints.Routes}",
            "invalid_request_error", null, "not_found"));
        await app.StartAsync().ConfigureAwait(false);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address.Replace("[::]", "127.0.0.1").Replace("0.0.0.0", "127.0.0.1") + "/");
        options.Log?.Invoke($"listening on {address}");
        return server;
    }

    /// <summary>Graceful shutdown: 503 for new requests, running ones finish (up to the grace period) or are cancelled.</summary>
    public Task StopAsync() => Task.Run(() => app.StopAsync()); // the drain blocks the stopping thread, not the caller

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await app.StopAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Before the endpoints: the Host-header guard and OpenAI-shaped 405s; counts in /metrics what it and the fallback answer.</summary>
    async Task Gate(HttpContext context, RequestDelegate next)
    {
        try
        {
            string? allow = AllowedMethods(context.Request.Path);
            if (!HostAllowed(context.Request.Host))
                await OpenAiEndpoints.Error(context, 400, $"the Host header '{OpenAiEndpoints.Printable(context.Request.Host.Value)}' is not one this server answers to (localhost, an IP address, or a name given with --allowed-host); " +
                    "start the server with --allowed-host NAME to reach it by that name", "invalid_request_error", null, "invalid_host");
            else if (allow is not null && !allow.Split(", ").Contains(context.Request.Method, StringComparer.OrdinalIgnoreCase))
            {
                context.Response.Headers.Allow = allow;
                await OpenAiEndpoints.Error(context, 405, $"{context.Request.Path} takes {allow.Replace(", ", " or ")}, not {OpenAiEndpoints.Printable(context.Request.Method)}", "invalid_request_error", null, "method_not_allowed");
            }
            else
                await next(context);
        }
        finally
        {
            endpoints.CountUnrouted(context);
        }
    }

    /// <summary>The methods a known path takes (its Allow header), or null for a path with no route.</summary>
    string? AllowedMethods(PathString path)
    {
        string p = (path.Value ?? "").TrimEnd('/');
        if (p is "/v1/completions" or "/v1/chat/completions")
            return "POST";
        if (p is "/health" or "/v1/models" || p.StartsWith("/v1/models/", StringComparison.Ordinal) || p == "" && options.ChatPage)
            return "GET, HEAD";
        if (p == "/metrics" && options.Metrics)
            return "GET";
        return null;
    }

    /// <summary>
    /// DNS-rebinding guard: a Host header must be localhost, an IP address literal (a rebinding attack
    /// needs a name it controls), or a name given with --allowed-host. A request without one (HTTP/1.0)
    /// cannot come from a browser and passes.
    /// </summary>
    bool HostAllowed(HostString host)
    {
        if (!host.HasValue)
            return true;
        string name = host.Host.TrimEnd('.');
        if (name.Length == 0 || name.Equals("localhost", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase))
            return true;
        if (IPAddress.TryParse(name.Trim('[', ']'), out _) && (name.Contains(':') || name.Count(ch => ch == '.') == 3))
            return true;
        return options.AllowedHosts.Any(a => a == "*" || a.TrimEnd('.').Equals(name, StringComparison.OrdinalIgnoreCase));
    }
}
