using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Security.Claims;
using System.Text.Encodings.Web;
using System.Text.Json;
using IlgpuLlama.Server;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Issue 22 item 8: the endpoints as a library. An ASP.NET Core application of the test's own maps
/// them with <c>AddLlamaEngine</c> + <c>MapOpenAiEndpoints</c>, and its authentication, CORS and
/// logging apply to them; <c>serve</c>'s own behaviour is the other server tests'.
/// </summary>
public sealed class LibraryHostingTests(DemoServer demo) : IClassFixture<DemoServer>
{
    sealed class HeaderScheme(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder)
        : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
    {
        protected override Task<AuthenticateResult> HandleAuthenticateAsync() =>
            Task.FromResult(Request.Headers["X-Test-Key"] == "k"
                ? AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, "t")], "Test")), "Test"))
                : AuthenticateResult.NoResult());
    }

    sealed class Capture : ILoggerProvider
    {
        public ConcurrentQueue<(string Category, string Line)> Lines { get; } = new();
        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);
        public void Dispose() { }

        sealed class Logger(Capture owner, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
            public bool IsEnabled(LogLevel logLevel) => true;
            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                owner.Lines.Enqueue((category, formatter(state, exception)));
        }
    }

    static async Task<(WebApplication App, HttpClient Http)> Start(Action<WebApplicationBuilder> services, Action<WebApplication> pipeline)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        services(builder);
        var app = builder.Build();
        pipeline(app);
        await app.StartAsync();
        return (app, new HttpClient { BaseAddress = new Uri(app.Urls.First()), Timeout = TimeSpan.FromMinutes(5) });
    }

    static readonly object Chat = new { messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 3, temperature = 0 };

    [Fact]
    public async Task The_application_s_authentication_CORS_and_logging_apply_to_the_endpoints()
    {
        var capture = new Capture();
        var (app, http) = await Start(b =>
        {
            b.Logging.AddProvider(capture);
            b.Services.AddLlamaEngine(demo.Engine, new OpenAiEndpointOptions { ModelId = "lib", Metrics = true });
            b.Services.AddAuthentication("Test").AddScheme<AuthenticationSchemeOptions, HeaderScheme>("Test", null);
            b.Services.AddAuthorization();
            b.Services.AddCors(o => o.AddPolicy("site", p => p.WithOrigins("https://example.org").AllowAnyHeader().WithMethods("POST")));
        }, app =>
        {
            app.UseCors();
            app.UseAuthentication();
            app.UseAuthorization();
            app.MapOpenAiEndpoints().RequireAuthorization().RequireCors("site");
            app.MapGet("/own", () => "mine");
        });
        await using var _ = app;
        using var __ = http;

        // The application's authorization answers before the endpoints.
        var refused = await http.PostAsJsonAsync("v1/chat/completions", Chat);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("health")).StatusCode);

        // With its key the model answers, under the configured id.
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = JsonContent.Create(Chat) };
        request.Headers.Add("X-Test-Key", "k");
        request.Headers.Add("Origin", "https://example.org");
        var answer = await http.SendAsync(request);
        string body = await answer.Content.ReadAsStringAsync();
        Assert.True(answer.StatusCode == HttpStatusCode.OK, body);
        using var doc = JsonDocument.Parse(body);
        Assert.Equal("lib", doc.RootElement.GetProperty("model").GetString());
        Assert.Equal(3, doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("https://example.org", answer.Headers.GetValues("Access-Control-Allow-Origin").Single());

        // A CORS preflight from the allowed origin, and from another.
        using var preflight = new HttpRequestMessage(HttpMethod.Options, "v1/chat/completions");
        preflight.Headers.Add("Origin", "https://example.org");
        preflight.Headers.Add("Access-Control-Request-Method", "POST");
        var ok = await http.SendAsync(preflight);
        Assert.Equal("https://example.org", ok.Headers.GetValues("Access-Control-Allow-Origin").Single());
        using var other = new HttpRequestMessage(HttpMethod.Options, "v1/chat/completions");
        other.Headers.Add("Origin", "https://evil.example");
        other.Headers.Add("Access-Control-Request-Method", "POST");
        Assert.False((await http.SendAsync(other)).Headers.Contains("Access-Control-Allow-Origin"));

        // The application's own endpoint beside them; the request's line in the application's log.
        Assert.Equal("mine", await http.GetStringAsync("own"));
        Assert.Contains(capture.Lines, l => l.Category == "IlgpuLlama.Server" && l.Line.Contains("POST /v1/chat/completions request", StringComparison.Ordinal));

        // /metrics counted the answered request.
        using var metrics = new HttpRequestMessage(HttpMethod.Get, "metrics");
        metrics.Headers.Add("X-Test-Key", "k");
        string text = await (await http.SendAsync(metrics)).Content.ReadAsStringAsync();
        Assert.Contains("ilgpu_llama_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1", text);
    }

    [Fact]
    public async Task The_endpoints_own_api_key_and_switches_work_without_the_serve_host()
    {
        var (app, http) = await Start(b => b.Services.AddLlamaEngine(demo.Engine, new OpenAiEndpointOptions { ModelId = "lib", ApiKey = "secret", ChatPage = false }),
            app => app.MapOpenAiEndpoints());
        await using var _ = app;
        using var __ = http;
        var refused = await http.PostAsJsonAsync("v1/chat/completions", Chat);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.Equal("invalid_api_key", JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString());
        http.DefaultRequestHeaders.Authorization = new("Bearer", "secret");
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsJsonAsync("v1/chat/completions", Chat)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("health")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("")).StatusCode); // no chat page
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("metrics")).StatusCode); // metrics off
    }

    [Fact]
    public async Task Under_a_route_prefix_the_key_still_guards_the_endpoints_and_metrics_keep_their_labels()
    {
        var (app, http) = await Start(b => b.Services.AddLlamaEngine(demo.Engine, new OpenAiEndpointOptions { ModelId = "lib", ApiKey = "secret", Metrics = true }),
            app => app.MapGroup("/llm").MapOpenAiEndpoints());
        await using var _ = app;
        using var __ = http;
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.PostAsJsonAsync("llm/v1/completions", new { prompt = "x", max_tokens = 1 })).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("llm/v1/models")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("llm/metrics")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("llm/health")).StatusCode);
        http.DefaultRequestHeaders.Authorization = new("Bearer", "secret");
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsJsonAsync("llm/v1/completions", new { prompt = "x", max_tokens = 1 })).StatusCode);
        string text = await http.GetStringAsync("llm/metrics");
        Assert.Contains("ilgpu_llama_requests_total{endpoint=\"/v1/completions\",status=\"401\"} 1", text);
        Assert.Contains("ilgpu_llama_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1", text);
    }

    [Fact]
    public void Mapping_without_the_engine_says_what_to_call()
    {
        var app = WebApplication.CreateSlimBuilder().Build();
        var e = Assert.Throws<InvalidOperationException>(() => app.MapOpenAiEndpoints());
        Assert.Contains("AddLlamaEngine", e.Message);
    }

    [Fact]
    public async Task An_engine_registered_by_path_is_loaded_with_the_application()
    {
        var (app, http) = await Start(b => b.Services.AddLlamaEngine(demo.ModelDir,
                new LlamaEngineOptions { Device = IlgpuLlama.Device.DeviceKind.Cpu, Engine = new IlgpuLlama.Engine.EngineOptions { MaxBatchSize = 1, MaxSeqLen = 256 } },
                new OpenAiEndpointOptions { ModelId = "bypath" }),
            app => app.MapOpenAiEndpoints());
        await using var _ = app;
        using var __ = http;
        var health = JsonDocument.Parse(await http.GetStringAsync("health")).RootElement;
        Assert.Equal("bypath", health.GetProperty("model").GetString());
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsJsonAsync("v1/chat/completions", Chat)).StatusCode);
    }
}
