using System.CommandLine;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Constraints;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Server;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama bench serve</c>: a load generator for the OpenAI-compatible server. At each
/// concurrency level, that many clients send streaming completions back to back (ignore_eos, so
/// every request produces exactly --max-tokens tokens); it reports output tokens/s over the level's
/// wall time, time to first token and the gaps between streamed chunks (inter-token latency), p50
/// and p99. Without --url it loads --model and starts a server in-process on a free loopback port.
/// <para><c>--scenario chat</c>: each of --clients clients holds a conversation of --turns turns
/// through /v1/chat/completions (each turn's messages: the conversation so far, the last reply and a
/// new user message) and the time to first token is reported per turn, with and without prefix
/// reuse (the in-process server runs twice, the second time as <c>serve --no-prefix-reuse</c>; a
/// --url server is measured as it is).</para>
/// </summary>
public static class BenchServeCommand
{
    public sealed record Level(int Concurrency, int Requests, int Failed, long OutputTokens, double Seconds, double OutputTokensPerSecond,
        double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms);

    /// <summary>The prompt of every request unless --prompt says otherwise.</summary>
    public const string DefaultPrompt = "The quick brown fox jumps over the lazy dog. Once upon a time";

    public sealed record Report(string Target, string? Device, string Commit, int PromptTokens, int MaxTokens, IReadOnlyList<Level> Levels)
    {
        /// <summary>The requests' response_format: text, or json_object (every request constrained).</summary>
        public string ResponseFormat { get; init; } = "text";

        /// <summary>Structured-output masks the in-process server computed during the run (null with --url).</summary>
        public long? MaskSteps { get; init; }

        /// <summary>Their mean cost per step in milliseconds, trie walk and row masking (null with --url or none).</summary>
        public double? MaskMillisecondsPerStep { get; init; }

        /// <summary>The mask's cost on this model's vocabulary along random JSON documents (MaskBenchmark; null with --url).</summary>
        public MaskCost? VocabularyMask { get; init; }
    }

    /// <summary>One turn of the chat scenario over all clients: prompt tokens (p50, from the usage) and time to first token.</summary>
    public sealed record ChatTurn(int Turn, int Requests, int Failed, int PromptTokensP50, double TtftP50Ms, double TtftP99Ms);

    /// <summary>One run of the chat scenario; PrefixReuse null: a --url server as it is.</summary>
    public sealed record ChatRun(bool? PrefixReuse, IReadOnlyList<ChatTurn> Turns);

    public sealed record ChatReport(string Target, string? Device, string Commit, int Clients, int TurnCount, int MaxTokens, IReadOnlyList<ChatRun> Runs);

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
        var scenario = new Option<string>("--scenario")
        {
            Description = "completions: streams of one prompt at several concurrencies; chat: --clients growing multi-turn conversations, time to first token per turn with and without prefix reuse",
            DefaultValueFactory = _ => "completions",
        };
        scenario.AcceptOnlyFromAmong("completions", "chat");
        var responseFormat = new Option<string>("--response-format")
        {
            Description = "response_format of every request: text, or json_object (structured output: the requests run without ignore_eos, and the mask's cost per step is reported)",
            DefaultValueFactory = _ => "text",
            HelpName = "text|json_object",
        };
        responseFormat.AcceptOnlyFromAmong("text", "json_object");
        var clients = CliOptions.Integer("--clients", "Conversations at once (--scenario chat)", 2, 1);
        var turns = CliOptions.Integer("--turns", "Turns per conversation (--scenario chat)", 5, 1);
        var json = CliOptions.Json();
        var engine = new ModelOptions();
        var command = new Command("serve", "Load test of the OpenAI-compatible server: output tok/s, time to first token and inter-token latency at several concurrencies")
            { url, model, concurrency, requests, prompt, maxTokens, apiKey, scenario, clients, turns, responseFormat, json };
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            int[] levels = ParseLevels(parse.GetValue(concurrency)!);
            string text = parse.GetValue(prompt)!;
            int max = parse.GetValue(maxTokens);
            bool constrained = parse.GetValue(responseFormat) == "json_object";
            if (parse.GetValue(scenario) == "chat")
                return RunChatScenario(parse, io, engine, parse.GetValue(url), parse.GetValue(model), parse.GetValue(apiKey), parse.GetValue(clients), parse.GetValue(turns), max, parse.GetValue(json));

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
                    server = OpenAiServer.StartAsync(llamaEngine, new ServerOptions { Port = 0, ModelId = "bench", ParameterName = CliNames.Flag }).GetAwaiter().GetResult();
                    target = server.Address;
                    io.Err.WriteLine($"in-process server at {target} ({llama.MaxBatch} slots)");
                }
                using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1024 }) { BaseAddress = target, Timeout = TimeSpan.FromMinutes(30) };
                if (parse.GetValue(apiKey) is { } key)
                    http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);

                // One request first, so compilation or connection set-up is not in the first level; its
                // usage says how many tokens the server made of the prompt (with --url this engine's
                // tokenizer is not the server's).
                var warmUp = RunLevel(http, 1, 1, text, constrained ? max : Math.Min(max, 2), constrained).GetAwaiter().GetResult();
                int promptTokens = warmUp.PromptTokens > 0 ? warmUp.PromptTokens : llamaEngine?.Encode(text).Count ?? 0;
                var results = new List<Level>();
                foreach (int c in levels)
                {
                    int n = parse.GetValue(requests) ?? Math.Max(8, 4 * c);
                    var (level, _) = RunLevel(http, c, n, text, max, constrained).GetAwaiter().GetResult();
                    results.Add(level);
                    io.Err.WriteLine($"concurrency {c}: {level.OutputTokensPerSecond:F1} tok/s");
                }
                var stats = llamaEngine?.Advanced.Scheduler.Stats;
                var report = new Report(target.ToString(), device?.Description, BuildInfo.Commit, promptTokens, max, results)
                {
                    ResponseFormat = constrained ? "json_object" : "text",
                    MaskSteps = stats?.MaskSteps,
                    MaskMillisecondsPerStep = stats is { MaskSteps: > 0 } ? stats.MaskMillisecondsPerStep : null,
                    // The mask's cost on this vocabulary, whatever the requests asked: what a constrained step adds on this CPU.
                    VocabularyMask = llamaEngine?.Tokenizer is { } tok ? MaskBenchmark.Run(TokenTrie.For(tok)) : null,
                };
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

    /// <summary>The chat scenario: against --url once, else on an in-process server with prefix reuse and again without.</summary>
    static int RunChatScenario(ParseResult parse, CommandIO io, ModelOptions engine, string? url, string? modelDir, string? apiKey, int clients, int turns, int max, bool asJson)
    {
        var runs = new List<ChatRun>();
        string target;
        string? deviceName = null;
        if (url is not null)
        {
            var address = new Uri(url.TrimEnd('/') + "/");
            target = address.ToString();
            runs.Add(new ChatRun(null, RunChat(address, apiKey, clients, turns, max)));
        }
        else
        {
            string dir = ModelOptions.ResolveModelDir(modelDir, io, allowDemo: true, ModelOptions.ChatModelDirs, out _);
            var tokenizer = LlamaTokenizer.FromModel(dir);
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, engine.Engine(parse, io), io);
            deviceName = device.Description;
            target = "in-process";
            foreach (bool reuse in new[] { true, false })
            {
                using var llamaEngine = LlamaEngine.FromModel(llama, tokenizer, new SchedulerOptions { MaxQueuedRequests = int.MaxValue, PrefixReuse = reuse });
                var server = OpenAiServer.StartAsync(llamaEngine, new ServerOptions { Port = 0, ModelId = "bench", ParameterName = CliNames.Flag }).GetAwaiter().GetResult();
                try
                {
                    io.Err.WriteLine($"in-process server at {server.Address} ({llama.MaxBatch} slots), prefix reuse {(reuse ? "on" : "off")}");
                    runs.Add(new ChatRun(reuse, RunChat(server.Address, null, clients, turns, max)));
                }
                finally
                {
                    server.DisposeAsync().AsTask().GetAwaiter().GetResult();
                }
            }
        }
        var report = new ChatReport(target, deviceName, BuildInfo.Commit, clients, turns, max, runs);
        if (asJson)
            io.WriteJson(report);
        else
        {
            io.Out.WriteLine($"bench serve --scenario chat: {target}, {clients} clients x {turns} turns, {max} tokens per reply, commit {report.Commit}");
            io.Out.WriteLine($"{"turn",4} {"prompt",7}  " + string.Join("  ", runs.Select(r => $"{"TTFT p50 " + Label(r),22} {"p99",8} {"failed",6}")));
            for (int t = 0; t < turns; t++)
                io.Out.WriteLine($"{t + 1,4} {runs[0].Turns[t].PromptTokensP50,7}  " + string.Join("  ", runs.Select(r => $"{r.Turns[t].TtftP50Ms,20:F1}ms {r.Turns[t].TtftP99Ms,6:F1}ms {r.Turns[t].Failed,6}")));
        }
        return runs.Any(r => r.Turns.Any(t => t.Failed > 0)) ? CliRunner.Failure : 0;

        static string Label(ChatRun r) => r.PrefixReuse switch { true => "(reuse)", false => "(no reuse)", null => "" };
    }

    /// <summary>Runs the conversations (after one warm-up request) and sums each turn up.</summary>
    static IReadOnlyList<ChatTurn> RunChat(Uri address, string? apiKey, int clients, int turns, int max)
    {
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1024 }) { BaseAddress = address, Timeout = TimeSpan.FromMinutes(30) };
        if (apiKey is not null)
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        // The same conversations once untimed first (other words), so compilation and first-use costs
        // are in neither run's figures.
        var timings = new List<(int Turn, Timing Timing)>();
        Conversations("warm-up").GetAwaiter().GetResult();
        Conversations("question").GetAwaiter().GetResult();
        return Enumerable.Range(0, turns).Select(t =>
        {
            var all = timings.Where(x => x.Turn == t).Select(x => x.Timing).ToList();
            var ok = all.Where(x => x.Ok).ToList();
            var ttft = ok.Select(x => x.TtftMs).ToList();
            return new ChatTurn(t + 1, all.Count, all.Count - ok.Count, (int)Percentile(ok.Select(x => (double)x.PromptTokens).ToList(), 50),
                Percentile(ttft, 50), Percentile(ttft, 99));
        }).ToList();

        Task Conversations(string word) => Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            var messages = new List<object>();
            for (int t = 0; t < turns; t++)
            {
                messages.Add(new { role = "user", content = $"{word} {t + 1} of {c + 1}: {17 * c + 3 * t + 5}?" });
                var (timing, reply) = await OneChatRequest(http, messages, max);
                if (word != "warm-up")
                    lock (timings)
                        timings.Add((t, timing));
                messages.Add(new { role = "assistant", content = reply });
            }
        })));
    }

    /// <summary>One streamed chat completion: its timing and the reply's text.</summary>
    static Task<(Timing Timing, string Text)> OneChatRequest(HttpClient http, IReadOnlyList<object> messages, int maxTokens) =>
        Streamed(http, "v1/chat/completions",
            JsonSerializer.Serialize(new { messages, max_tokens = maxTokens, temperature = 0, ignore_eos = true, stream = true, stream_options = new { include_usage = true } }),
            choice => choice.TryGetProperty("delta", out var delta) && delta.TryGetProperty("content", out var content) ? content.GetString() : null);

    /// <summary>
    /// Sends one streaming request and reads its server-sent events to [DONE]: the time to its first
    /// text, the gaps between texts, the token counts of its usage chunk, and the text
    /// (<paramref name="text"/> reads a chunk's first choice). A failed request is a Timing that is not Ok.
    /// </summary>
    static async Task<(Timing Timing, string Text)> Streamed(HttpClient http, string path, string body, Func<JsonElement, string?> text)
    {
        var started = Stopwatch.GetTimestamp();
        var reply = new StringBuilder();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            if (!response.IsSuccessStatusCode)
                return (new Timing(0, [], 0, false), "");
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
                var choices = chunk.RootElement.GetProperty("choices");
                if (choices.GetArrayLength() == 0 || text(choices[0]) is not { Length: > 0 } piece)
                    continue;
                if (first is null)
                    first = now;
                else
                    gaps.Add(now - last);
                last = now;
                reply.Append(piece);
            }
            return (new Timing(first ?? 0, gaps, tokens, done && first is not null, promptTokens), reply.ToString());
        }
        catch (HttpRequestException)
        {
            return (new Timing(0, [], 0, false), "");
        }
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
    static async Task<(Level Level, int PromptTokens)> RunLevel(HttpClient http, int concurrency, int requests, string prompt, int maxTokens, bool constrained = false)
    {
        int next = 0;
        var timings = new List<Timing>();
        var wall = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Increment(ref next) <= requests)
            {
                var t = await OneRequest(http, prompt, maxTokens, constrained);
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

    static async Task<Timing> OneRequest(HttpClient http, string prompt, int maxTokens, bool constrained = false)
    {
        // Constrained requests end when their JSON does (ignore_eos would let them run past it, and is refused).
        var body = constrained
            ? JsonSerializer.Serialize(new { prompt, max_tokens = maxTokens, temperature = 1, seed = 1, stream = true, stream_options = new { include_usage = true }, response_format = new { type = "json_object" } })
            : JsonSerializer.Serialize(new { prompt, max_tokens = maxTokens, temperature = 0, ignore_eos = true, stream = true, stream_options = new { include_usage = true } });
        return (await Streamed(http, "v1/completions", body, choice => choice.GetProperty("text").GetString())).Timing;
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
        io.Out.WriteLine($"bench serve: {r.Target}, prompt {r.PromptTokens} tokens, {r.MaxTokens} tokens per request{(r.ResponseFormat == "text" ? "" : $", response_format {r.ResponseFormat}")}, commit {r.Commit}");
        io.Out.WriteLine($"{"concurrency",11} {"requests",8} {"failed",6} {"tokens",8} {"tok/s",9} {"TTFT p50",9} {"TTFT p99",9} {"ITL p50",8} {"ITL p99",8}");
        foreach (var l in r.Levels)
            io.Out.WriteLine($"{l.Concurrency,11} {l.Requests,8} {l.Failed,6} {l.OutputTokens,8} {l.OutputTokensPerSecond,9:F1} {l.TtftP50Ms,7:F1}ms {l.TtftP99Ms,7:F1}ms {l.ItlP50Ms,6:F1}ms {l.ItlP99Ms,6:F1}ms");
        if (r.MaskMillisecondsPerStep is double perStep)
            io.Out.WriteLine($"structured-output mask in this run: {perStep:F3} ms per step over {r.MaskSteps} steps (trie walk and row masking, on the host)");
        if (r.VocabularyMask is { } cost)
            io.Out.WriteLine($"structured-output mask on this vocabulary: {cost}");
    }
}
