// IlgpuLlama's OpenAI-compatible endpoints in an ASP.NET Core application of your own: the application
// brings its authentication (here an X-Api-Key scheme), its CORS policy and its logging; the library
// brings the endpoints (AddLlamaEngine + MapOpenAiEndpoints).
// Usage: dotnet run --project examples/IlgpuLlama.ServerExample -c Release [-- MODEL_DIR] [--serve]
// Without a directory it runs the built-in demo model (random weights: its text is gibberish). Without
// --serve it starts on a free port, calls itself once as a client would, prints the answers and stops.
using System.Net.Http.Json;
using System.Security.Claims;
using System.Text.Encodings.Web;
using IlgpuLlama;
using IlgpuLlama.Engine;
using IlgpuLlama.Server;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

bool serve = args.Contains("--serve");
string dir = args.FirstOrDefault(a => !a.StartsWith("--", StringComparison.Ordinal)) ?? DemoModel.Ensure("weights");

var builder = WebApplication.CreateBuilder();
builder.WebHost.UseUrls(serve ? "http://127.0.0.1:8080" : "http://127.0.0.1:0");
builder.Logging.SetMinimumLevel(LogLevel.Warning).AddFilter("IlgpuLlama.Server", LogLevel.Information); // one line per request from the endpoints

// The engine (loaded from the directory when the application starts) and the endpoints over it.
builder.Services.AddLlamaEngine(dir, new LlamaEngineOptions { Device = IlgpuLlama.Device.DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 256 } },
    new OpenAiEndpointOptions { ModelId = "demo", Metrics = true });

// The application's own concerns, which apply to the endpoints like to any other.
builder.Services.AddAuthentication(ApiKeyScheme.Name).AddScheme<AuthenticationSchemeOptions, ApiKeyScheme>(ApiKeyScheme.Name, null);
builder.Services.AddAuthorization();
builder.Services.AddCors(o => o.AddPolicy("site", p => p.WithOrigins("https://example.org").AllowAnyHeader().WithMethods("GET", "POST")));

var app = builder.Build();
app.UseCors();
app.UseAuthentication();
app.UseAuthorization();
app.MapOpenAiEndpoints().RequireAuthorization().RequireCors("site");
app.MapGet("/hello", () => "an endpoint of the application beside the model's");

await app.StartAsync();
var address = new Uri(app.Urls.First());
Console.Error.WriteLine($"listening on {address}");
if (serve)
{
    await app.WaitForShutdownAsync();
    return 0;
}

using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(5) };
var request = new
{
    model = "demo",
    messages = new[] { new { role = "user", content = "Name three colours." } },
    max_tokens = 16,
    temperature = 0,
    repetition_penalty = 2,
};

// Without the application's key: its authentication answers, before the endpoints.
var refused = await http.PostAsJsonAsync("v1/chat/completions", request);
Console.WriteLine($"without X-Api-Key: {(int)refused.StatusCode} {refused.StatusCode}");

// With it: the model answers.
http.DefaultRequestHeaders.Add("X-Api-Key", ApiKeyScheme.Key);
var answer = await http.PostAsJsonAsync("v1/chat/completions", request);
var body = await answer.Content.ReadFromJsonAsync<System.Text.Json.JsonElement>();
string text = body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString() ?? "";
Console.WriteLine($"with X-Api-Key: {(int)answer.StatusCode}: {text.ReplaceLineEndings(" ")}");
Console.WriteLine($"usage: {body.GetProperty("usage").GetRawText()}");
var metrics = await http.GetStringAsync("metrics");
Console.WriteLine($"/metrics: {metrics.Split('\n').Count(l => l.StartsWith("ilgpu_llama_", StringComparison.Ordinal))} series lines");

await app.StopAsync();
return answer.IsSuccessStatusCode && refused.StatusCode == System.Net.HttpStatusCode.Unauthorized ? 0 : 1;

/// <summary>The application's authentication: a fixed key in the X-Api-Key header (a real one would look it up).</summary>
sealed class ApiKeyScheme(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string Name = "ApiKey";
    public const string Key = "example-key";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync() =>
        Task.FromResult(Request.Headers["X-Api-Key"] == Key
            ? AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, "example")], Name)), Name))
            : AuthenticateResult.NoResult());
}
