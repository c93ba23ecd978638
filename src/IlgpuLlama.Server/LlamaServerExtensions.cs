using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace IlgpuLlama.Server;

/// <summary>
/// The OpenAI-compatible endpoints in an ASP.NET Core application of your own:
/// <code>
/// builder.Services.AddLlamaEngine("weights/Llama-3.2-1B-Instruct", options: new() { ModelId = "llama-3.2-1b" });
/// var app = builder.Build();
/// app.MapOpenAiEndpoints().RequireAuthorization().RequireCors("site");
/// </code>
/// The endpoints sit in the application's pipeline, so its authentication, authorization, CORS,
/// rate limiting and logging apply to them; <see cref="OpenAiServer"/> (what <c>ilgpu-llama serve</c>
/// runs) is one such application.
/// </summary>
public static class LlamaServerExtensions
{
    /// <summary>
    /// Registers <paramref name="engine"/> (owned by the caller, who disposes it after the application
    /// stops) and the endpoints over it as singletons.
    /// </summary>
    public static IServiceCollection AddLlamaEngine(this IServiceCollection services, LlamaEngine engine, OpenAiEndpointOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        services.AddSingleton(engine);
        return AddEndpoints(services, options);
    }

    /// <summary>
    /// Registers an engine loaded from <paramref name="modelPath"/> (a model directory, a .gguf file or
    /// <c>ollama:NAME</c>) when first needed (at the latest when the endpoints are mapped), and disposed
    /// by the application's container when it stops, and the endpoints over it.
    /// </summary>
    public static IServiceCollection AddLlamaEngine(this IServiceCollection services, string modelPath, LlamaEngineOptions? engineOptions = null, OpenAiEndpointOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelPath);
        services.AddSingleton(_ => LlamaEngine.Load(modelPath, engineOptions));
        return AddEndpoints(services, options);
    }

    static IServiceCollection AddEndpoints(IServiceCollection services, OpenAiEndpointOptions? options)
    {
        options ??= new OpenAiEndpointOptions();
        services.AddSingleton(options);
        // The drain runs inside the host's shutdown: leave the web server time to finish the responses
        // after it (the grace, 5 s for cancelled requests to say so, 10 s more), unless the application allows more.
        var needed = options.ShutdownGrace + TimeSpan.FromSeconds(15);
        services.PostConfigure<HostOptions>(o => o.ShutdownTimeout = o.ShutdownTimeout < needed ? needed : o.ShutdownTimeout);
        services.AddSingleton(sp => new OpenAiEndpoints(sp.GetRequiredService<LlamaEngine>(), sp.GetRequiredService<OpenAiEndpointOptions>(),
            sp.GetService<ILoggerFactory>()?.CreateLogger("IlgpuLlama.Server")));
        return services;
    }

    /// <summary>
    /// Maps GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions, GET /metrics
    /// (with <see cref="OpenAiEndpointOptions.Metrics"/>) and the chat page at GET / (with
    /// <see cref="OpenAiEndpointOptions.ChatPage"/>), and drains running requests when the application
    /// stops. Needs <see cref="AddLlamaEngine(IServiceCollection, LlamaEngine, OpenAiEndpointOptions?)"/>.
    /// The result takes the application's conventions for all of them
    /// (<c>RequireAuthorization</c>, <c>RequireCors</c>, <c>RequireRateLimiting</c>, ...).
    /// </summary>
    public static IEndpointConventionBuilder MapOpenAiEndpoints(this IEndpointRouteBuilder web)
    {
        var endpoints = web.ServiceProvider.GetService<OpenAiEndpoints>()
            ?? throw new InvalidOperationException("MapOpenAiEndpoints needs the engine: call builder.Services.AddLlamaEngine(...) before building the application");
        var group = web.MapGroup("");
        endpoints.Map(group);
        web.ServiceProvider.GetService<IHostApplicationLifetime>()?.ApplicationStopping.Register(endpoints.Drain);
        return group;
    }
}
