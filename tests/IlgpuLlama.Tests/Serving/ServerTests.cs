using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Engine;
using IlgpuLlama.Sampling;
using IlgpuLlama.Server;
using IlgpuLlama.Tests.Cli;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// The demo model behind a server on a free loopback port: 2 KV slots of <c>maxSeqLen</c> positions,
/// engine settings named by serve's flags, as `serve` runs it.
/// </summary>
public abstract class DemoServerFixture(int maxSeqLen) : IAsyncLifetime
{
    readonly DemoModelDir dir = new();

    public LlamaEngine Engine { get; private set; } = null!;
    public OpenAiServer Server { get; private set; } = null!;
    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromMinutes(5) };
    public string ModelDir => dir.Path;

    public async Task InitializeAsync()
    {
        Engine = LlamaEngine.Load(dir.Path, new LlamaEngineOptions { Device = DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 2, MaxSeqLen = maxSeqLen } });
        Server = await OpenAiServer.StartAsync(Engine, new ServerOptions { Port = 0, ModelId = "demo", ParameterName = IlgpuLlama.Cli.Infrastructure.CliNames.Flag });
        Http.BaseAddress = Server.Address;
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Engine.Dispose();
        Http.Dispose();
        dir.Dispose();
    }
}

/// <summary>The demo model behind a server with 2 slots of 128 positions.</summary>
public sealed class DemoServer() : DemoServerFixture(128);

public sealed class ServerTests(DemoServer demo) : IClassFixture<DemoServer>
{
    HttpClient Http => demo.Http;

    static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");

    static async Task<(HttpStatusCode Status, JsonElement Json)> Post(HttpClient http, string path, object body)
    {
        using var response = await http.PostAsync(path, Body(body));
        return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    /// <summary>Reads a server-sent event stream to its end: the data payloads before [DONE], and whether [DONE] came.</summary>
    static async Task<(List<JsonElement> Events, bool Done)> ReadEvents(HttpResponseMessage response)
    {
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<JsonElement>();
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
                continue;
            if (line == "data: [DONE]")
                return (events, true);
            events.Add(JsonDocument.Parse(line[6..]).RootElement.Clone());
        }
        return (events, false);
    }

    static HttpRequestMessage StreamRequest(string path, object body) => new(HttpMethod.Post, path) { Content = Body(body) };

    static void AssertError(HttpStatusCode expected, (HttpStatusCode Status, JsonElement Json) r, string? param = null, string? inMessage = null)
    {
        Assert.Equal(expected, r.Status);
        var e = r.Json.GetProperty("error");
        Assert.False(string.IsNullOrEmpty(e.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrEmpty(e.GetProperty("type").GetString()));
        Assert.True(e.TryGetProperty("code", out _));
        if (param is not null)
            Assert.Equal(param, e.GetProperty("param").GetString());
        if (inMessage is not null)
            Assert.Contains(inMessage, e.GetProperty("message").GetString());
    }

    [Fact]
    public async Task Health_models_and_a_completion_equal_to_the_library_result()
    {
        var health = JsonDocument.Parse(await Http.GetStringAsync("health")).RootElement;
        Assert.Equal("ok", health.GetProperty("status").GetString());
        var models = JsonDocument.Parse(await Http.GetStringAsync("v1/models")).RootElement;
        Assert.Equal("demo", models.GetProperty("data")[0].GetProperty("id").GetString());

        var (status, json) = await Post(Http, "v1/completions", new { model = "demo", prompt = "Hello world", max_tokens = 9, temperature = 0 });
        Assert.Equal(HttpStatusCode.OK, status);
        var expected = await demo.Engine.GenerateTextAsync("Hello world", new GenerationSettings { MaxNewTokens = 9, Sampling = new SamplingOptions { Temperature = 0 } });
        var choice = json.GetProperty("choices")[0];
        Assert.Equal(expected.Text, choice.GetProperty("text").GetString());
        Assert.Equal(expected.FinishReason == FinishReason.Length ? "length" : "stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("text_completion", json.GetProperty("object").GetString());
        var usage = json.GetProperty("usage");
        Assert.Equal(expected.PromptTokens.Count, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.GeneratedTokens.Count, usage.GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task Concurrent_streams_on_both_endpoints_match_their_non_streamed_answers()
    {
        object Completion(string prompt, bool stream) => new { prompt, max_tokens = 10, temperature = 0, stream };
        object Chat(string text, bool stream) => new { messages = new[] { new { role = "user", content = text } }, max_tokens = 10, temperature = 0, stream };
        var requests = new (string Path, Func<bool, object> Body)[]
        {
            ("v1/completions", s => Completion("Once upon", s)), ("v1/chat/completions", s => Chat("Hi there", s)),
            ("v1/completions", s => Completion("The numbers", s)), ("v1/chat/completions", s => Chat("Tell me a story", s)),
        };
        var streams = requests.Select(r => Task.Run(async () =>
        {
            using var response = await Http.SendAsync(StreamRequest(r.Path, r.Body(true)), HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return await ReadEvents(response);
        })).ToArray();
        var results = await Task.WhenAll(streams);
        for (int i = 0; i < requests.Length; i++)
        {
            var (events, done) = results[i];
            Assert.True(done, "the stream did not end with data: [DONE]");
            bool chat = requests[i].Path.Contains("chat");
            string streamed = string.Concat(events.Select(e => e.GetProperty("choices")[0]).Select(c => chat
                ? c.GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : ""
                : c.GetProperty("text").GetString()));
            var finish = events[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString();
            var (status, json) = await Post(Http, requests[i].Path, requests[i].Body(false));
            Assert.Equal(HttpStatusCode.OK, status);
            var choice = json.GetProperty("choices")[0];
            Assert.Equal(chat ? choice.GetProperty("message").GetProperty("content").GetString() : choice.GetProperty("text").GetString(), streamed);
            Assert.Equal(choice.GetProperty("finish_reason").GetString(), finish);
            if (chat)
                Assert.Equal("assistant", events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        }
    }

    [Fact]
    public async Task Stop_strings_cut_the_text_in_both_forms()
    {
        var (_, full) = await Post(Http, "v1/completions", new { prompt = "Hello world", max_tokens = 20, temperature = 0 });
        string text = full.GetProperty("choices")[0].GetProperty("text").GetString()!;
        string stop = text.Substring(3, 2);
        foreach (object stopValue in new object[] { stop, new[] { "zzzz", stop } })
        {
            var (status, json) = await Post(Http, "v1/completions", new { prompt = "Hello world", max_tokens = 20, temperature = 0, stop = stopValue });
            Assert.Equal(HttpStatusCode.OK, status);
            var choice = json.GetProperty("choices")[0];
            Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], choice.GetProperty("text").GetString());
            Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        }
    }

    [Fact]
    public async Task Bad_requests_get_openai_errors_and_do_not_disturb_the_server()
    {
        AssertError(HttpStatusCode.BadRequest, await Post(Http, "v1/completions", new { prompt = "x", n = 17 }), "n");
        AssertError(HttpStatusCode.BadRequest, await Post(Http, "v1/completions", new { prompt = "x", top_p = 2.0 }), "top_p");
        AssertError(HttpStatusCode.BadRequest, await Post(Http, "v1/completions", new { prompt = "x", temperature = "hot" }), "temperature");
        AssertError(HttpStatusCode.BadRequest, await Post(Http, "v1/completions", new { prompt = "x", max_tokens = 500 }), "max_tokens", "the server's --max-seq-len 128");
        AssertError(HttpStatusCode.BadRequest, await Post(Http, "v1/chat/completions", new { messages = Array.Empty<object>() }), "messages");
        AssertError(HttpStatusCode.BadRequest, await Post(Http, "v1/completions", new { max_tokens = 3 }), "prompt");
        AssertError(HttpStatusCode.BadRequest, await Post(Http, "v1/completions", new { prompt = "x", stop = 5 }), "stop");
        using (var bad = await Http.PostAsync("v1/completions", new StringContent("{not json", Encoding.UTF8, "application/json")))
            AssertError(HttpStatusCode.BadRequest, (bad.StatusCode, JsonDocument.Parse(await bad.Content.ReadAsStringAsync()).RootElement.Clone()), inMessage: "not valid JSON");
        AssertError(HttpStatusCode.NotFound, await Post(Http, "v1/completions", new { model = "gpt-4", prompt = "x" }), "model");
        using (var missing = await Http.GetAsync("v1/engines"))
            AssertError(HttpStatusCode.NotFound, (missing.StatusCode, JsonDocument.Parse(await missing.Content.ReadAsStringAsync()).RootElement.Clone()));
        var (status, _) = await Post(Http, "v1/completions", new { prompt = "still fine", max_tokens = 2 });
        Assert.Equal(HttpStatusCode.OK, status);
    }

    [Fact]
    public async Task An_api_key_and_a_body_limit_give_401_and_413()
    {
        await using var strict = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", ApiKey = "sekrit", MaxBodyBytes = 2000 });
        using var http = new HttpClient { BaseAddress = strict.Address };
        AssertError(HttpStatusCode.Unauthorized, await Post(http, "v1/completions", new { prompt = "x", max_tokens = 2 }));
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        AssertError(HttpStatusCode.Unauthorized, await Post(http, "v1/completions", new { prompt = "x", max_tokens = 2 }));
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("health")).StatusCode); // health needs no key
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sekrit");
        Assert.Equal(HttpStatusCode.OK, (await Post(http, "v1/completions", new { prompt = "x", max_tokens = 2 })).Status);
        AssertError(HttpStatusCode.RequestEntityTooLarge, await Post(http, "v1/completions", new { prompt = new string('a', 3000), max_tokens = 2 }));
    }
}

/// <summary>One KV slot and a queue of one: 429, a disconnect handing its slot on, and graceful shutdown.</summary>
public sealed class ServerSlotTests
{
    [Fact]
    public async Task A_full_queue_gives_429_a_disconnect_frees_the_slot_and_shutdown_drains()
    {
        using var dir = new DemoModelDir();
        using var engine = LlamaEngine.Load(dir.Path, new LlamaEngineOptions
        {
            Device = DeviceKind.Cpu,
            Engine = new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 1024 },
            Scheduler = new SchedulerOptions { MaxQueuedRequests = 1 },
        });
        // The grace period is what the drain waits for the running stream D. With the default 30 s,
        // a loaded 2-core machine (two CPU hogs: ~25 s per decode step of the CPU accelerator) cut D
        // after 30 s and the test failed on finish_reason (issue 17 item 9, a test timing assumption,
        // not a race: the server did what the grace period says). The test is about draining, so the
        // grace is longer than any machine needs; a cut stream would now end with an error event.
        var server = await OpenAiServer.StartAsync(engine, new ServerOptions { Port = 0, ModelId = "demo", ShutdownGrace = TimeSpan.FromMinutes(30) });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(15) };
        static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");
        async Task<HttpResponseMessage> OpenStream(object body)
        {
            var response = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = Body(body) }, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return response;
        }
        static async Task<string> FirstEvent(StreamReader reader)
        {
            while (await reader.ReadLineAsync() is { } line)
                if (line.StartsWith("data: ", StringComparison.Ordinal))
                    return line;
            throw new InvalidOperationException("the stream ended");
        }
        async Task WaitFor(Func<bool> condition)
        {
            for (int i = 0; !condition(); i++)
            {
                Assert.True(i < 6000, "the server did not get there");
                await Task.Delay(10);
            }
        }

        // A holds the only slot (ignoring EOS it would run 1000 tokens, minutes on the CPU, so its client
        // leaves long before it could finish however loaded the machine); B waits in the queue; C is refused.
        var a = await OpenStream(new { prompt = "Once upon", max_tokens = 1000, temperature = 0, stream = true, ignore_eos = true });
        var aReader = new StreamReader(await a.Content.ReadAsStreamAsync());
        await FirstEvent(aReader);
        var b = http.PostAsync("v1/completions", Body(new { prompt = "Hello", max_tokens = 2, temperature = 0 }));
        await WaitFor(() => engine.Advanced.Scheduler.QueuedCount == 1);
        using (var c = await http.PostAsync("v1/completions", Body(new { prompt = "x", max_tokens = 2 })))
        {
            Assert.Equal((HttpStatusCode)429, c.StatusCode);
            Assert.Equal("1", c.Headers.GetValues("Retry-After").Single());
            Assert.Contains("queue is full", await c.Content.ReadAsStringAsync());
        }

        // A's client goes away: its request is cancelled and B gets the slot.
        aReader.Dispose();
        a.Dispose();
        using (var bResponse = await b)
            Assert.Equal(HttpStatusCode.OK, bResponse.StatusCode);
        Assert.True(engine.Advanced.Scheduler.Stats.DecodeTokens < 900, $"A ran on after its client left ({engine.Advanced.Scheduler.Stats.DecodeTokens} decode tokens)");

        // Shutdown: a running stream finishes with [DONE], a new request gets 503, then the server stops.
        // ignore_eos: D ends by length whatever the demo model picks.
        var d = await OpenStream(new { prompt = "In 1969", max_tokens = 6, temperature = 0, stream = true, ignore_eos = true });
        var dReader = new StreamReader(await d.Content.ReadAsStreamAsync());
        await FirstEvent(dReader);
        var stopping = server.StopAsync();
        await WaitFor(() => server.IsShuttingDown);
        using (var refused = await http.PostAsync("v1/completions", Body(new { prompt = "x", max_tokens = 2 })))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.Contains("shutting down", await refused.Content.ReadAsStringAsync());
        }
        string rest = await dReader.ReadToEndAsync();
        Assert.DoesNotContain("\"error\"", rest); // the drain did not cut D (it would end with an error event)
        Assert.Contains("\"finish_reason\":\"length\"", rest);
        Assert.EndsWith("data: [DONE]\n\n", rest);
        await stopping;
        await server.DisposeAsync();
    }
}

/// <summary>bench serve against an in-process server on the demo model.</summary>
public sealed class BenchServeTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    [Fact]
    public void Every_level_completes_its_requests_with_exactly_max_tokens_each()
    {
        var r = CliHarness.Run("bench", "serve", "--model", demo.Path, "--device", "cpu", "--max-batch-size", "2", "--concurrency", "1,3", "--requests", "3",
            "--max-tokens", "4", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        var levels = JsonDocument.Parse(r.Out).RootElement.GetProperty("levels").EnumerateArray().ToArray();
        Assert.Equal([1, 3], levels.Select(l => l.GetProperty("concurrency").GetInt32()));
        foreach (var l in levels)
        {
            Assert.Equal(3, l.GetProperty("requests").GetInt32());
            Assert.Equal(0, l.GetProperty("failed").GetInt32());
            Assert.Equal(12, l.GetProperty("output_tokens").GetInt64());
            Assert.True(l.GetProperty("ttft_p50_ms").GetDouble() > 0);
            Assert.True(l.GetProperty("ttft_p99_ms").GetDouble() >= l.GetProperty("ttft_p50_ms").GetDouble());
            Assert.True(l.GetProperty("output_tokens_per_second").GetDouble() > 0);
        }
    }

    /// <summary>Against another server (--url) the prompt's token count comes from the server's usage, not from a tokenizer this process does not have (issue 23: it said 0).</summary>
    [Fact]
    public async Task With_url_the_prompt_tokens_are_the_servers_count()
    {
        using var engine = LlamaEngine.Load(demo.Path, new LlamaEngineOptions { Device = DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 128 } });
        await using var server = await OpenAiServer.StartAsync(engine, new ServerOptions { Port = 0, ModelId = "demo" });
        var r = CliHarness.Run("bench", "serve", "--url", server.Address.ToString(), "--concurrency", "1", "--requests", "1", "--max-tokens", "2", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        int reported = JsonDocument.Parse(r.Out).RootElement.GetProperty("prompt_tokens").GetInt32();
        Assert.True(reported > 0, r.Out);
        Assert.Equal(reported, engine.Encode(IlgpuLlama.Cli.Commands.BenchServeCommand.DefaultPrompt).Count);
    }

    [Fact]
    public void Percentiles_are_nearest_rank()
    {
        double[] values = [5, 1, 4, 2, 3];
        Assert.Equal(3, IlgpuLlama.Cli.Commands.BenchServeCommand.Percentile(values, 50));
        Assert.Equal(5, IlgpuLlama.Cli.Commands.BenchServeCommand.Percentile(values, 99));
        Assert.Equal(1, IlgpuLlama.Cli.Commands.BenchServeCommand.Percentile(values, 1));
        Assert.Equal(0, IlgpuLlama.Cli.Commands.BenchServeCommand.Percentile([], 50));
    }
}
