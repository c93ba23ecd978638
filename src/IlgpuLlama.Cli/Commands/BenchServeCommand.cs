using System.CommandLine;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Cli.Serving;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama bench serve</c>: a load generator for the OpenAI-compatible server. At each
/// concurrency level, that many clients send streaming completions back to back (ignore_eos, so
/// every request produces exactly --max-tokens tokens); it reports output tokens/s over the level's
/// wall time, time to first token and the gaps between streamed chunks (inter-token latency), p50
/// and p99. Without --url it loads --model and starts a server in-process on a free loopback port.
/// </summary>
public static class BenchServeCommand
{
    public sealed record Level(int Concurrency, int Requests, int Failed, long OutputTokens, double Seconds, double OutputTokensPerSecond,
        double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms);

    /// <summary>The prompt of every request unless --prompt says otherwise.</summary>
    public const string DefaultPrompt = "The quick brown fox jumps over the lazy dog. Once upon a time";

    public sealed record Report(string Target, string? Device, string Commit, int PromptTokens, int MaxTokens, IReadOnlyList<Level> Levels);

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var url = new Option<string?>("--url") { Description = "A running server (e.g. http://127.0.0.1:8080); default: start one in-process on --model", HelpName = "URL" };
        var model = new Option<string?>("--model") { Description = "Model directory, .gguf file or ollama:NAME for the in-process server (default: as serve)", HelpName = "DIR|GGUF" };
        var concurrency = new Option<string>("--concurrency") { Description = "Concurrent clients per level, comma-separated", DefaultValueFactory = _ => "1,4,16,64", HelpName = "N[,N...]" };
        var requests = CliOptions.OptionalInteger("--requests", "Requests per level (default: 4 x concurrency, at least 8)", 1);
        var prompt = new Option<string>("--prompt") { Description = "Prompt of every request", DefaultValueFactory = _ => DefaultPrompt };
        var maxTokens = CliOptions.Integer("--max-tokens", "Tokens generated per request", 64, 1);
        var apiKey = new Option<string?>("--api-key") { Description = "Bearer key for --url", HelpName = "KEY" };
        var json = CliOptions.Json();
        var engine = new ModelOptions();
        var command = new Command("serve", "Load test of the OpenAI-compatible server: output tok/s, time to first token and inter-token latency at several concurrencies")
            { url, model, concurrency, requests, prompt, maxTokens, apiKey, json };
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            int[] levels = ParseLevels(parse.GetValue(concurrency)!);
            string text = parse.GetValue(prompt)!;
            int max = parse.GetValue(maxTokens);

            ComputeDevice? device = null;
            Engine.LlamaModel? llama = null;
            LlamaEngine? llamaEngine = null;
            OpenAiServer? server = null;
            try
            {
                Uri target;
                if (parse.GetValue(url) is { } given)
                    target = new Uri(given.TrimEnd('/') + "/");
                else
                {
                    string dir = ModelOptions.ResolveModelDir(parse.GetValue(model), io, allowDemo: true, ModelOptions.ChatModelDirs, out _);
                    var tokenizer = LlamaTokenizer.FromModel(dir);
                    device = ComputeDevice.Create(parse.GetValue(engine.Device));
                    llama = ModelOptions.Load(device, dir, engine.Engine(parse, io), io);
                    llamaEngine = LlamaEngine.FromModel(llama, tokenizer, new SchedulerOptions { MaxQueuedRequests = int.MaxValue });
                    server = OpenAiServer.StartAsync(llamaEngine, new ServerOptions { Port = 0, ModelId = "bench" }).GetAwaiter().GetResult();
                    target = server.Address;
                    io.Err.WriteLine($"in-process server at {target} ({llama.MaxBatch} slots)");
                }
                using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1024 }) { BaseAddress = target, Timeout = TimeSpan.FromMinutes(30) };
                if (parse.GetValue(apiKey) is { } key)
                    http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);

                // One request first, so compilation or connection set-up is not in the first level; its
                // usage says how many tokens the server made of the prompt (with --url this engine's
                // tokenizer is not the server's).
                var warmUp = RunLevel(http, 1, 1, text, Math.Min(max, 2)).GetAwaiter().GetResult();
                int promptTokens = warmUp.PromptTokens > 0 ? warmUp.PromptTokens : llamaEngine?.Encode(text).Count ?? 0;
                var results = new List<Level>();
                foreach (int c in levels)
                {
                    int n = parse.GetValue(requests) ?? Math.Max(8, 4 * c);
                    var (level, _) = RunLevel(http, c, n, text, max).GetAwaiter().GetResult();
                    results.Add(level);
                    io.Err.WriteLine($"concurrency {c}: {level.OutputTokensPerSecond:F1} tok/s");
                }
                var report = new Report(target.ToString(), device?.Description, BuildInfo.Commit, promptTokens, max, results);
                if (parse.GetValue(json))
                    io.WriteJson(report);
                else
                    WriteTable(io, report);
                return results.Any(l => l.Failed > 0) ? CliRunner.Failure : 0;
            }
            finally
            {
                server?.DisposeAsync().AsTask().GetAwaiter().GetResult();
                llamaEngine?.Dispose();
                llama?.Dispose();
                device?.Dispose();
            }
        });
        return command;
    }

    static int[] ParseLevels(string text)
    {
        try
        {
            var levels = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
            if (levels.Length == 0 || levels.Any(l => l < 1))
                throw new FormatException();
            return levels;
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new ArgumentException($"--concurrency '{text}' is not a list of positive numbers, e.g. --concurrency 1,4,16,64");
        }
    }

    sealed record Timing(double TtftMs, List<double> GapsMs, int Tokens, bool Ok, int PromptTokens = 0);

    /// <summary>One concurrency level, and the prompt tokens the server reported in its usage (0 if none did).</summary>
    static async Task<(Level Level, int PromptTokens)> RunLevel(HttpClient http, int concurrency, int requests, string prompt, int maxTokens)
    {
        int next = 0;
        var timings = new List<Timing>();
        var wall = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Increment(ref next) <= requests)
            {
                var t = await OneRequest(http, prompt, maxTokens);
                lock (timings)
                    timings.Add(t);
            }
        })).ToArray();
        await Task.WhenAll(workers);
        double seconds = wall.Elapsed.TotalSeconds;
        var ok = timings.Where(t => t.Ok).ToList();
        long tokens = ok.Sum(t => (long)t.Tokens);
        var ttft = ok.Select(t => t.TtftMs).ToList();
        var gaps = ok.SelectMany(t => t.GapsMs).ToList();
        return (new Level(concurrency, requests, timings.Count - ok.Count, tokens, seconds, tokens / seconds,
            Percentile(ttft, 50), Percentile(ttft, 99), Percentile(gaps, 50), Percentile(gaps, 99)), ok.Select(t => t.PromptTokens).DefaultIfEmpty(0).Max());
    }

    static async Task<Timing> OneRequest(HttpClient http, string prompt, int maxTokens)
    {
        var body = JsonSerializer.Serialize(new { prompt, max_tokens = maxTokens, temperature = 0, ignore_eos = true, stream = true, stream_options = new { include_usage = true } });
        var started = Stopwatch.GetTimestamp();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            if (!response.IsSuccessStatusCode)
                return new Timing(0, [], 0, false);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            double? first = null;
            double last = 0;
            var gaps = new List<double>();
            int tokens = 0, promptTokens = 0;
            bool done = false;
            while (await reader.ReadLineAsync() is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal))
                    continue;
                if (line == "data: [DONE]")
                {
                    done = true;
                    break;
                }
                double now = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                using var chunk = JsonDocument.Parse(line[6..]);
                if (chunk.RootElement.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                {
                    tokens = usage.GetProperty("completion_tokens").GetInt32();
                    if (usage.TryGetProperty("prompt_tokens", out var p) && p.ValueKind == JsonValueKind.Number)
                        promptTokens = p.GetInt32();
                    continue;
                }
                var choice = chunk.RootElement.GetProperty("choices")[0];
                if (choice.GetProperty("text").GetString() is not { Length: > 0 })
                    continue;
                if (first is null)
                    first = now;
                else
                    gaps.Add(now - last);
                last = now;
            }
            return new Timing(first ?? 0, gaps, tokens, done && first is not null, promptTokens);
        }
        catch (HttpRequestException)
        {
            return new Timing(0, [], 0, false);
        }
    }

    /// <summary>Nearest-rank percentile (0 for no values).</summary>
    public static double Percentile(IReadOnlyList<double> values, double p)
    {
        if (values.Count == 0)
            return 0;
        var sorted = values.OrderBy(v => v).ToArray();
        int rank = (int)Math.Ceiling(p / 100 * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    static void WriteTable(CommandIO io, Report r)
    {
        io.Out.WriteLine($"bench serve: {r.Target}, prompt {r.PromptTokens} tokens, {r.MaxTokens} tokens per request, commit {r.Commit}");
        io.Out.WriteLine($"{"concurrency",11} {"requests",8} {"failed",6} {"tokens",8} {"tok/s",9} {"TTFT p50",9} {"TTFT p99",9} {"ITL p50",8} {"ITL p99",8}");
        foreach (var l in r.Levels)
            io.Out.WriteLine($"{l.Concurrency,11} {l.Requests,8} {l.Failed,6} {l.OutputTokens,8} {l.OutputTokensPerSecond,9:F1} {l.TtftP50Ms,7:F1}ms {l.TtftP99Ms,7:F1}ms {l.ItlP50Ms,6:F1}ms {l.ItlP99Ms,6:F1}ms");
    }
}
