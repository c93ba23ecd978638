using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Server;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama serve</c>: an OpenAI-compatible HTTP server (see <see cref="OpenAiServer"/>) over the
/// continuous-batching scheduler. Binds 127.0.0.1 unless --host says otherwise; SIGINT/SIGTERM stop
/// it gracefully (new requests get 503, running ones finish or are cancelled after the grace period)
/// and it exits 0.
/// </summary>
public static class ServeCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face Llama 3 model directory, a .gguf file or ollama:NAME[:TAG] (default: weights/Llama-3.2-1B-Instruct, then weights/Llama-3.2-1B, else the demo)", HelpName = "DIR|GGUF" };
        var host = new Option<string>("--host") { Description = "Address to bind (0.0.0.0 for every interface)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = CliOptions.Integer("--port", "TCP port (0 = any free port)", 8080, 0, 65535);
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1 requests (and /metrics)", HelpName = "KEY" };
        var allowedHosts = new Option<string[]>("--allowed-host")
        {
            Description = "A host name clients may use in the Host header besides localhost and IP addresses (repeatable; '*' allows any). Others get 400, which stops DNS rebinding",
            HelpName = "NAME",
            AllowMultipleArgumentsPerToken = false,
        };
        var modelId = new Option<string?>("--model-id") { Description = "Model id in /v1/models and responses (default: the directory name)", HelpName = "ID" };
        var maxQueue = CliOptions.Integer("--max-queue", "Requests that may wait for a KV slot; more get 429", 256, 0);
        // Parsed like every real option (invariant culture, no thousands separators, finite): "1,5" is
        // an error, not 15 seconds, and NaN or 1e39 never reach TimeSpan.FromSeconds after the load.
        var grace = CliOptions.Real("--shutdown-grace", "Seconds a shutdown waits for running requests before cancelling them", 30f,
            v => v is >= 0 and <= 86_400, "between 0 and 86400 seconds");
        var metrics = new Option<bool>("--metrics") { Description = "Serve GET /metrics in Prometheus' text format (requests, tokens, latency histograms, queue and KV slots); behind --api-key like /v1" };
        var noPrefixReuse = new Option<bool>("--no-prefix-reuse")
        {
            Description = "Prefill every prompt whole (by default a request takes the free KV slot whose cached tokens share the longest prefix with its prompt and prefills only the rest)",
        };
        var engine = new ModelOptions();
        var command = new Command("serve", "OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions (streaming), /v1/models, /health, /metrics (with --metrics), and a chat page at /")
            { model, host, port, apiKey, allowedHosts, modelId, maxQueue, grace, metrics, noPrefixReuse };
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            // Before the model loads: a server nobody can authenticate to is a mistake, not a choice.
            if (parse.GetValue(apiKey) is { } key && string.IsNullOrWhiteSpace(key))
                throw new ArgumentException($"--api-key is empty; give a key (clients send 'Authorization: Bearer KEY'), or leave --api-key out to serve without one");
            string[] hosts = parse.GetValue(allowedHosts) ?? [];
            if (hosts.FirstOrDefault(h => string.IsNullOrWhiteSpace(h) || h.Contains('/') || h.Contains(':') && !h.StartsWith('[')) is { } badHost)
                throw new ArgumentException($"--allowed-host '{badHost}' is not a host name; give a name such as myserver.example.com (no scheme, port or path)");
            string dir = ModelOptions.ResolveModelDir(parse.GetValue(model), io, allowDemo: true, ModelOptions.ChatModelDirs, out _);
            var tokenizer = LlamaTokenizer.FromModel(dir);
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, engine.Engine(parse, io), io);
            using var llamaEngine = LlamaEngine.FromModel(llama, tokenizer, new SchedulerOptions
            {
                MaxQueuedRequests = parse.GetValue(maxQueue),
                PrefixReuse = !parse.GetValue(noPrefixReuse),
            });
            string id = parse.GetValue(modelId) ?? Path.GetFileName(Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar));
            var options = new ServerOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                ApiKey = parse.GetValue(apiKey),
                AllowedHosts = hosts,
                ModelId = id,
                ShutdownGrace = TimeSpan.FromSeconds(parse.GetValue(grace)),
                Metrics = parse.GetValue(metrics),
                Log = line => io.Err.WriteLine($"[serve] {line}"),
                ParameterName = CliNames.Flag,
            };
            var server = OpenAiServer.StartAsync(llamaEngine, options).GetAwaiter().GetResult();
            io.Err.WriteLine($"serving '{id}' at {server.Address} ({llama.MaxBatch} slots x {llama.MaxSeq} positions{(options.ApiKey is null ? "" : ", API key required")}{(options.Metrics ? ", metrics at /metrics" : "")}); chat page: open {server.Address} in a browser; Ctrl-C stops");
            io.Out.WriteLine(server.Address);
            io.Out.Flush();
            // SIGINT and SIGTERM reach the host's console lifetime, which runs the graceful shutdown.
            server.Stopped.GetAwaiter().GetResult();
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            io.Err.WriteLine("[serve] stopped");
            return 0;
        });
        return command;
    }
}
