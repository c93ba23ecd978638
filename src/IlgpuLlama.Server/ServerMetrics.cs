using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Prometheus;

namespace IlgpuLlama.Server;

/// <summary>
/// The metrics of one <see cref="OpenAiEndpoints"/> (<c>serve --metrics</c>), served at GET /metrics in
/// Prometheus' text format by prometheus-net. Each server has its own <see cref="CollectorRegistry"/>,
/// not the process-wide default one, so servers in one process (the tests) do not count each other's
/// requests. Counters and histograms are updated as requests end; the gauges read the scheduler's
/// state at scrape time.
/// </summary>
sealed class ServerMetrics
{
    /// <summary>The route.</summary>
    public const string Path = "/metrics";

    /// <summary>The metric names' prefix.</summary>
    public const string Prefix = "ilgpu_llama_";

    readonly CollectorRegistry registry = Metrics.NewCustomRegistry();
    readonly Counter requests;
    readonly Counter promptTokens;
    readonly Counter generatedTokens;
    readonly Histogram timeToFirstToken;
    readonly Histogram interTokenLatency;
    readonly Counter prefixReuseHits;

    public ServerMetrics(Scheduler scheduler)
    {
        var factory = Metrics.WithCustomRegistry(registry);
        requests = factory.CreateCounter(Prefix + "requests_total",
            "HTTP requests answered, by endpoint (the route; 'other' for paths with none) and final status (499: the client left before the response began)",
            "endpoint", "status");
        promptTokens = factory.CreateCounter(Prefix + "prompt_tokens_total", "Prompt tokens of the generation requests that finished (their usage.prompt_tokens)");
        generatedTokens = factory.CreateCounter(Prefix + "generated_tokens_total", "Tokens generated for the requests that finished (their usage.completion_tokens)");
        timeToFirstToken = factory.CreateHistogram(Prefix + "time_to_first_token_seconds",
            "From submission to the scheduler (queueing and prefill included) to the first generated token, per request that finished",
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.005, 2, 15) }); // 5 ms .. 82 s
        interTokenLatency = factory.CreateHistogram(Prefix + "inter_token_latency_seconds",
            "Time between consecutive generated tokens of a request (one observation per gap), per request that finished",
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.001, 2, 16) }); // 1 ms .. 33 s
        prefixReuseHits = factory.CreateCounter(Prefix + "prefix_reuse_hits_total",
            "Generation requests that finished having reused a cached prompt prefix in their KV slot (at least one prompt token not prefilled again; serve --no-prefix-reuse: always 0)");
        var queued = factory.CreateGauge(Prefix + "queue_depth", "Requests waiting for a KV slot");
        var running = factory.CreateGauge(Prefix + "running_sequences", "Requests holding a KV slot (prefilling or decoding)");
        var slotsInUse = factory.CreateGauge(Prefix + "kv_slots_in_use", "KV-cache slots held by a request");
        var slotsTotal = factory.CreateGauge(Prefix + "kv_slots_total", "KV-cache slots (the server's --max-batch-size)");
        registry.AddBeforeCollectCallback(() =>
        {
            queued.Set(scheduler.QueuedCount);
            running.Set(scheduler.RunningCount);
            slotsInUse.Set(scheduler.SlotsInUse);
            slotsTotal.Set(scheduler.SlotCount);
        });
    }

    /// <summary>Answers GET <see cref="Path"/>: the registry in Prometheus' text format.</summary>
    public async Task Serve(HttpContext c)
    {
        c.Response.StatusCode = 200;
        c.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        await registry.CollectAndExportAsTextAsync(c.Response.Body, c.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Counts a request that has been answered, with the status its client saw.</summary>
    public void Answered(HttpContext c) => Answered(c, Endpoint(c.Request.Path));

    /// <summary>Counts a request answered by the endpoint whose route is <paramref name="route"/> (its label, wherever the application mapped it).</summary>
    public void Answered(HttpContext c, string route)
    {
        int status = !c.Response.HasStarted && c.RequestAborted.IsCancellationRequested ? 499 : c.Response.StatusCode;
        requests.WithLabels(route, status.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();
    }

    /// <summary>
    /// Observes a generation request that finished: its token counts (what its usage reports), its
    /// time to first token and the gaps between its tokens. Called before the response's last bytes,
    /// so a client that scrapes after its answer sees it counted.
    /// </summary>
    public void Finished(ScheduledRequest handle, RequestResult r)
    {
        // The prompt once per request, as usage counts it: a group's later choices share the first's.
        if (handle.Choice == 0)
            promptTokens.Inc(r.PromptTokens.Count);
        generatedTokens.Inc(r.GeneratedTokens.Count);
        if (r.ReusedPromptTokens > 0)
            prefixReuseHits.Inc();
        if (r.GeneratedTokens.Count == 0)
            return;
        timeToFirstToken.Observe(r.TimeToFirstToken.TotalSeconds);
        var times = handle.TokenTimes;
        for (int i = 1; i < times.Count; i++)
            interTokenLatency.Observe((times[i] - times[i - 1]).TotalSeconds);
    }

    /// <summary>The endpoint label: the route a path takes, so the label's values are a fixed few.</summary>
    static string Endpoint(PathString path)
    {
        string p = (path.Value ?? "").TrimEnd('/');
        return p switch
        {
            "/health" or "/v1/models" or "/v1/completions" or "/v1/chat/completions" or Path => p,
            "" => "/", // the chat page
            _ when p.StartsWith("/v1/models/", StringComparison.Ordinal) => "/v1/models/{id}",
            _ => "other",
        };
    }
}
