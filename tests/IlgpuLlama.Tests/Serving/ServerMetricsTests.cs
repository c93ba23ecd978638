using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using IlgpuLlama.Server;

namespace IlgpuLlama.Tests.Serving;

/// <summary>serve --metrics: GET /metrics in Prometheus' text format (issue 22 item 6).</summary>
public sealed class ServerMetricsTests(DemoServer demo) : IClassFixture<DemoServer>
{
    static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");

    [Fact]
    public async Task Metrics_are_off_by_default()
    {
        using var response = await demo.Http.GetAsync("metrics");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        await using var keyed = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", ApiKey = "sekrit" });
        using var http = new HttpClient { BaseAddress = keyed.Address };
        using var keyedResponse = await http.GetAsync("metrics");
        Assert.Equal(HttpStatusCode.NotFound, keyedResponse.StatusCode); // an unknown route, as without a key
    }

    [Fact]
    public async Task Requests_tokens_and_latencies_are_counted()
    {
        long hitsBefore = demo.Engine.Advanced.Scheduler.Stats.PrefixReuseHits;
        await using var server = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", Metrics = true });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };

        // A completion; ignore_eos: exactly max_tokens tokens whatever the demo model picks.
        using var plain = await http.PostAsync("v1/completions", Body(new { prompt = "Hello world", max_tokens = 6, temperature = 0, ignore_eos = true }));
        Assert.Equal(HttpStatusCode.OK, plain.StatusCode);
        var plainUsage = JsonDocument.Parse(await plain.Content.ReadAsStringAsync()).RootElement.GetProperty("usage").Clone();

        // A streamed chat completion with a usage chunk, read to its end (the server has then counted it).
        using var streamed = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
        {
            Content = Body(new
            {
                messages = new[] { new { role = "user", content = "Hi there" } }, max_tokens = 5, temperature = 0, ignore_eos = true, stream = true,
                stream_options = new { include_usage = true },
            }),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, streamed.StatusCode);
        string events = await streamed.Content.ReadAsStringAsync();
        var streamUsage = events.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal))
            .Select(l => JsonDocument.Parse(l[6..]).RootElement.Clone()).Single(e => e.TryGetProperty("usage", out _)).GetProperty("usage");

        // A bad request.
        using (var bad = await http.PostAsync("v1/completions", Body(new { prompt = "x", n = 0 })))
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);

        var (first, contentType) = await Scrape(http);
        Assert.Equal("text/plain", contentType.MediaType);
        Assert.Equal(1, first.Value("ilgpu_llama_requests_total", ("endpoint", "/v1/completions"), ("status", "200")));
        Assert.Equal(1, first.Value("ilgpu_llama_requests_total", ("endpoint", "/v1/chat/completions"), ("status", "200")));
        Assert.Equal(1, first.Value("ilgpu_llama_requests_total", ("endpoint", "/v1/completions"), ("status", "400")));
        Assert.Equal(3, first.Samples.Where(s => s.Name == "ilgpu_llama_requests_total").Sum(s => s.Value));

        int prompt = plainUsage.GetProperty("prompt_tokens").GetInt32() + streamUsage.GetProperty("prompt_tokens").GetInt32();
        int generated = plainUsage.GetProperty("completion_tokens").GetInt32() + streamUsage.GetProperty("completion_tokens").GetInt32();
        Assert.Equal(6 + 5, generated);
        Assert.Equal(prompt, first.Value("ilgpu_llama_prompt_tokens_total"));
        Assert.Equal(generated, first.Value("ilgpu_llama_generated_tokens_total"));

        // One time to first token per successful request; one inter-token gap per token after the first.
        first.AssertHistogram("ilgpu_llama_time_to_first_token_seconds", count: 2);
        first.AssertHistogram("ilgpu_llama_inter_token_latency_seconds", count: generated - 2);
        Assert.True(first.Value("ilgpu_llama_time_to_first_token_seconds_sum") > 0);
        Assert.True(first.Value("ilgpu_llama_inter_token_latency_seconds_sum") > 0);

        // The gauges read the scheduler now: nothing waits or runs; the demo server has 2 slots.
        Assert.Equal(0, first.Value("ilgpu_llama_queue_depth"));
        Assert.Equal(0, first.Value("ilgpu_llama_running_sequences"));
        Assert.Equal(0, first.Value("ilgpu_llama_kv_slots_in_use"));
        Assert.Equal(2, first.Value("ilgpu_llama_kv_slots_total"));
        // Whether these prompts found a prefix in a slot depends on what earlier tests left there.
        Assert.Equal(demo.Engine.Advanced.Scheduler.Stats.PrefixReuseHits - hitsBefore, first.Value("ilgpu_llama_prefix_reuse_hits_total"));
        foreach (var (name, type) in new[]
        {
            ("ilgpu_llama_requests_total", "counter"), ("ilgpu_llama_prompt_tokens_total", "counter"), ("ilgpu_llama_generated_tokens_total", "counter"),
            ("ilgpu_llama_time_to_first_token_seconds", "histogram"), ("ilgpu_llama_inter_token_latency_seconds", "histogram"),
            ("ilgpu_llama_queue_depth", "gauge"), ("ilgpu_llama_running_sequences", "gauge"), ("ilgpu_llama_kv_slots_in_use", "gauge"),
            ("ilgpu_llama_kv_slots_total", "gauge"), ("ilgpu_llama_prefix_reuse_hits_total", "counter"),
        })
        {
            Assert.Equal(type, first.Types[name]);
            Assert.False(string.IsNullOrWhiteSpace(first.Help[name]), $"{name} has no help text");
        }

        // The scrape itself is a request; the one before is counted in the next.
        var (second, _) = await Scrape(http);
        Assert.Equal(1, second.Value("ilgpu_llama_requests_total", ("endpoint", "/metrics"), ("status", "200")));
    }

    [Fact]
    public async Task Prefix_reuse_hits_are_counted()
    {
        long hitsBefore = demo.Engine.Advanced.Scheduler.Stats.PrefixReuseHits;
        await using var server = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", Metrics = true });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
        var body = new { prompt = "Prefix reuse: the same long prompt twice, then once more with more words", max_tokens = 3, temperature = 0, ignore_eos = true };
        var texts = new List<string>();
        for (int i = 0; i < 3; i++)
        {
            using var response = await http.PostAsync("v1/completions", Body(body));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            texts.Add(JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!);
        }
        // The second and third find the first's prompt in its slot and give the same greedy text.
        Assert.Equal(texts[0], texts[1]);
        Assert.Equal(texts[0], texts[2]);
        var (metrics, _) = await Scrape(http);
        long hits = demo.Engine.Advanced.Scheduler.Stats.PrefixReuseHits - hitsBefore;
        Assert.True(hits >= 2, $"{hits} prefix reuse hits");
        Assert.Equal(hits, metrics.Value("ilgpu_llama_prefix_reuse_hits_total"));
    }

    [Fact]
    public async Task The_gauges_read_the_scheduler_at_scrape_time()
    {
        await using var server = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", Metrics = true });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
        // A stream that would run 120 tokens (seconds on the CPU) holds one of the 2 slots while it is read no further.
        var response = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/completions")
        {
            Content = Body(new { prompt = "Once upon", max_tokens = 120, temperature = 0, ignore_eos = true, stream = true }),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line && !line.StartsWith("data: ", StringComparison.Ordinal)) { }
        var (busy, _) = await Scrape(http);
        Assert.Equal(1, busy.Value("ilgpu_llama_running_sequences"));
        Assert.Equal(1, busy.Value("ilgpu_llama_kv_slots_in_use"));
        Assert.Equal(2, busy.Value("ilgpu_llama_kv_slots_total"));
        Assert.Equal(0, busy.Value("ilgpu_llama_queue_depth"));
        // The client leaves: the request is cancelled and frees its slot.
        reader.Dispose();
        response.Dispose();
        await demo.Engine.Advanced.Scheduler.WhenIdleAsync().WaitAsync(TimeSpan.FromMinutes(5));
        var (idle, _) = await Scrape(http);
        Assert.Equal(0, idle.Value("ilgpu_llama_running_sequences"));
        Assert.Equal(0, idle.Value("ilgpu_llama_kv_slots_in_use"));
    }

    [Fact]
    public async Task Metrics_need_the_api_key_like_v1()
    {
        await using var server = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", ApiKey = "sekrit", Metrics = true });
        using var http = new HttpClient { BaseAddress = server.Address };
        using (var none = await http.GetAsync("metrics"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
            Assert.Equal("invalid_api_key", JsonDocument.Parse(await none.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString());
        }
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        using (var wrong = await http.GetAsync("metrics"))
            Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sekrit");
        using (var post = await http.PostAsync("metrics", Body(new { })))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, post.StatusCode);
            Assert.Equal("GET", string.Join(", ", post.Content.Headers.Allow));
        }
        var (metrics, _) = await Scrape(http);
        Assert.Equal(2, metrics.Value("ilgpu_llama_requests_total", ("endpoint", "/metrics"), ("status", "401")));
        Assert.Equal(1, metrics.Value("ilgpu_llama_requests_total", ("endpoint", "/metrics"), ("status", "405")));
    }

    static async Task<(Exposition Metrics, MediaTypeHeaderValue ContentType)> Scrape(HttpClient http)
    {
        using var response = await http.GetAsync("metrics");
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return (Exposition.Parse(text), response.Content.Headers.ContentType!);
    }

    /// <summary>
    /// A strict reader of Prometheus' text exposition format (0.0.4): # HELP and # TYPE lines, then
    /// samples <c>name{label="value",...} value [timestamp]</c> of declared families; anything else fails.
    /// </summary>
    sealed record Exposition(List<Sample> Samples, Dictionary<string, string> Types, Dictionary<string, string> Help)
    {
        static readonly Regex SampleLine = new(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})?[ \t]+(?<value>\S+)([ \t]+-?\d+)?$");
        static readonly Regex Label = new(@"\G\s*(?<name>[a-zA-Z_][a-zA-Z0-9_]*)=""(?<value>(\\[\\""n]|[^\\""])*)""\s*(,|$)");
        static readonly Regex Meta = new(@"^# (?<kind>HELP|TYPE) (?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)( (?<rest>.*))?$");

        public static Exposition Parse(string text)
        {
            var e = new Exposition([], [], []);
            Assert.EndsWith("\n", text);
            foreach (string line in text.TrimEnd('\n').Split('\n'))
            {
                if (line.Length == 0)
                    continue;
                if (line.StartsWith('#'))
                {
                    var m = Meta.Match(line);
                    if (!m.Success)
                        continue; // a plain comment
                    string name = m.Groups["name"].Value, rest = m.Groups["rest"].Value;
                    if (m.Groups["kind"].Value == "TYPE")
                    {
                        Assert.Contains(rest, new[] { "counter", "gauge", "histogram", "summary", "untyped" });
                        Assert.True(e.Types.TryAdd(name, rest), $"a second TYPE line for {name}");
                        Assert.DoesNotContain(e.Samples, s => Family(s.Name, e.Types) == name); // TYPE comes before the family's samples
                    }
                    else
                        Assert.True(e.Help.TryAdd(name, rest), $"a second HELP line for {name}");
                    continue;
                }
                var sm = SampleLine.Match(line);
                Assert.True(sm.Success, $"not a sample line: {line}");
                var labels = new Dictionary<string, string>();
                string body = sm.Groups["labels"].Value;
                int at = 0;
                while (at < body.Length)
                {
                    var lm = Label.Match(body, at);
                    Assert.True(lm.Success, $"bad labels in: {line}");
                    Assert.True(labels.TryAdd(lm.Groups["name"].Value, lm.Groups["value"].Value), $"a repeated label in: {line}");
                    at = lm.Index + lm.Length;
                }
                string v = sm.Groups["value"].Value;
                double value = v switch
                {
                    "+Inf" => double.PositiveInfinity,
                    "-Inf" => double.NegativeInfinity,
                    "NaN" => double.NaN,
                    _ => double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : throw new FormatException($"bad value in: {line}"),
                };
                string sampleName = sm.Groups["name"].Value;
                Assert.True(e.Types.ContainsKey(Family(sampleName, e.Types)), $"a sample before its family's TYPE line: {line}");
                e.Samples.Add(new Sample(sampleName, labels, value));
            }
            return e;
        }

        /// <summary>The family a sample belongs to (a histogram's _bucket, _sum and _count are its own).</summary>
        static string Family(string sample, Dictionary<string, string> types)
        {
            foreach (string suffix in new[] { "_bucket", "_sum", "_count" })
                if (sample.EndsWith(suffix, StringComparison.Ordinal) && types.TryGetValue(sample[..^suffix.Length], out var t) && t is "histogram" or "summary")
                    return sample[..^suffix.Length];
            return sample;
        }

        /// <summary>The one sample of that name with exactly these labels (0 when a labelled counter has none yet).</summary>
        public double Value(string name, params (string Name, string Value)[] labels)
        {
            var matches = Samples.Where(s => s.Name == name && s.Labels.Count == labels.Length && labels.All(l => s.Labels.TryGetValue(l.Name, out var v) && v == l.Value)).ToArray();
            Assert.True(matches.Length <= 1, $"{matches.Length} samples of {name}");
            if (matches.Length == 0)
            {
                Assert.True(labels.Length > 0, $"no sample {name}");
                return 0;
            }
            return matches[0].Value;
        }

        /// <summary>A histogram's buckets are cumulative, end with +Inf, and its count is <paramref name="count"/>.</summary>
        public void AssertHistogram(string name, int count)
        {
            Assert.Equal("histogram", Types[name]);
            var buckets = Samples.Where(s => s.Name == name + "_bucket")
                .Select(s => (Le: s.Labels["le"] == "+Inf" ? double.PositiveInfinity : double.Parse(s.Labels["le"], CultureInfo.InvariantCulture), s.Value)).ToArray();
            Assert.True(buckets.Length > 1);
            Assert.Equal(double.PositiveInfinity, buckets[^1].Le);
            for (int i = 1; i < buckets.Length; i++)
            {
                Assert.True(buckets[i].Le > buckets[i - 1].Le);
                Assert.True(buckets[i].Value >= buckets[i - 1].Value);
            }
            Assert.Equal(count, buckets[^1].Value);
            Assert.Equal(count, Value(name + "_count"));
        }
    }

    sealed record Sample(string Name, Dictionary<string, string> Labels, double Value);
}
