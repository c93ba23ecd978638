using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Constraints;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Kernels;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama generate</c>: text (or token ids) in, text out. With no --model and no
/// weights/Llama-3.2-1B it runs the built-in demo model end to end, greedily unless a sampling flag
/// is given, so a first run is reproducible. Special tokens print only with --special. One prompt streams; any
/// number of prompts (more than the KV slots wait in the scheduler's queue) are printed in input order,
/// with a progress bar on stderr; --prompts-file FILE.jsonl writes one JSON result per input line, in
/// order. Speed and memory go to stderr; --json puts everything on stdout. Runs on <see cref="LlamaEngine"/>.
/// </summary>
public static class GenerateCommand
{
    /// <summary>Default prompt when neither --prompt nor --tokens is given.</summary>
    public const string DefaultPrompt = "The quick brown fox";

    /// <summary>Seed of the demo run when no sampling flag is given (it decodes greedily, so the seed only completes the record).</summary>
    public const ulong DemoSeed = 1;

    public sealed record SequenceJson(IReadOnlyList<int> PromptTokens, IReadOnlyList<int> GeneratedTokens, string? Text, string FinishReason)
    {
        /// <summary>With --logprobs: each generated token's log-probability and the most likely tokens at its position.</summary>
        public IReadOnlyList<TokenLogprobJson>? Logprobs { get; init; }
    }

    /// <summary>One token's log-probability and the most likely alternatives (ids and log-probabilities, most likely first).</summary>
    public sealed record TokenLogprobJson(int Id, double Logprob, IReadOnlyList<int> TopIds, IReadOnlyList<double> TopLogprobs);

    public sealed record MemoryJson(long ParameterCount, long WeightBytes, long KvCacheBytes, long ActivationBytes, long TotalBytes,
        long AllocatedWeights, long AllocatedKvCache, long AllocatedActivations, long AllocatedTotal)
    {
        /// <summary>The weights' format (or mix) on the device.</summary>
        public string? Dtype { get; init; }

        /// <summary>What the KV cache stores (fp16, fp32).</summary>
        public string? KvCacheDtype { get; init; }

        /// <summary>How the matmuls and RMSNorm sum (fp32, fp64).</summary>
        public string? Accumulate { get; init; }
    }

    public sealed record GenerateJson(string Model, string Device, IReadOnlyList<SequenceJson> Sequences, int PrefillTokens, double PrefillSeconds,
        double PrefillTokensPerSecond, int DecodeTokens, double DecodeSeconds, double DecodeTokensPerSecond, double DecodeMsPerStep,
        bool CudaGraph, ulong? Seed, MemoryJson Memory, long KernelLaunches, int DecodeLaunchesPerStep, int RecordedGraphs);

    /// <summary>One line of --prompts-file output.</summary>
    public sealed record PromptResultJson(int Index, string? Text, string FinishReason, int PromptTokens, int CompletionTokens, IReadOnlyList<int> Tokens);

    /// <summary>A prompt to run: its tokens and the text printed before the continuation.</summary>
    sealed record PromptInput(IReadOnlyList<int> Tokens, string? Echo);

    /// <summary>Builds the command; <paramref name="input"/> is standard input (for --prompt-file -).</summary>
    public static Command Create(Func<TextReader>? input = null)
    {
        input ??= () => Console.In;
        var model = new Option<string?>("--model") { Description = "Hugging Face Llama 3 model directory, a .gguf file or ollama:NAME[:TAG] (default: weights/Llama-3.2-1B, else the built-in demo)", HelpName = "DIR|GGUF" };
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text (repeat for several; more than the KV slots are queued)", AllowMultipleArgumentsPerToken = false };
        var tokens = new Option<string[]>("--tokens") { Description = "Prompt as token ids, e.g. 128000,9906 (repeat for several; works without tokenizer files)" };
        var promptFile = new Option<string[]>("--prompt-file") { Description = "A file whose whole text is one prompt (- reads stdin; repeatable)", HelpName = "FILE" };
        var promptsFile = new Option<string?>("--prompts-file")
        {
            Description = "JSONL, one {\"prompt\": \"...\"} or {\"messages\": [{\"role\": ..., \"content\": ...}]} per line; writes one JSON result per line to stdout, in input order",
            HelpName = "FILE.jsonl",
        };
        var stop = new Option<string[]>("--stop") { Description = "Stop when the text contains TEXT; the output ends before it (repeatable)", HelpName = "TEXT" };
        var maxNew = CliOptions.Integer("--max-new-tokens", "New tokens per sequence at most", GenerationDefaults.MaxNewTokens, 1);
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Do not stop at end-of-sequence tokens (benchmarks)" };
        var special = new Option<bool>("--special") { Description = "Print special tokens (<|eot_id|>, reserved tokens) by name; by default they print nothing" };
        var json = CliOptions.Json();
        var jsonSchema = new Option<string?>("--json-schema")
        {
            Description = "Constrain every output to JSON valid against the JSON schema in FILE (structured output: the supported keywords are in the README)",
            HelpName = "FILE",
        };
        var jsonObject = new Option<bool>("--json-object") { Description = "Constrain every output to a JSON object" };
        var sampling = new SamplingFlags();
        // The demo (no --model, no weights) decodes greedily with a fixed seed unless a sampling flag is given.
        string demoNote = $"; the built-in demo decodes greedily with seed {DemoSeed} unless a sampling flag is given";
        sampling.Temperature.Description += demoNote;
        sampling.Seed.Description += demoNote;
        var engine = new ModelOptions();
        var logprobs = CliOptions.OptionalInteger("--logprobs", $"With --json: each generated token's log-probability and the K most likely tokens at its position (0..{TokenLogprobs.MaxTop}; the log-softmax of the logits before temperature)", 0, TokenLogprobs.MaxTop);
        var command = new Command("generate", "Generate text for one or more prompts") { model, prompt, tokens, promptFile, promptsFile, stop, maxNew, ignoreEos, special, logprobs, json, jsonSchema, jsonObject };
        sampling.AddTo(command);
        engine.AddTo(command);
        command.Validators.Add(r =>
        {
            bool text = (r.GetValue(prompt)?.Length ?? 0) > 0 || (r.GetValue(promptFile)?.Length ?? 0) > 0;
            bool ids = (r.GetValue(tokens)?.Length ?? 0) > 0;
            if (text && ids)
                r.AddError("give prompts either as text (--prompt, --prompt-file) or as --tokens ids, not both");
            if (r.GetValue(promptsFile) is not null && (text || ids))
                r.AddError("--prompts-file holds every prompt; leave out --prompt, --prompt-file and --tokens");
            if (r.GetValue(promptsFile) is not null && r.GetValue(json))
                r.AddError("--prompts-file already writes JSON lines to stdout; leave out --json");
            bool constrained = r.GetValue(jsonSchema) is not null || r.GetValue(jsonObject);
            if (r.GetValue(jsonSchema) is not null && r.GetValue(jsonObject))
                r.AddError("give either --json-schema FILE or --json-object, not both");
            if (constrained && r.GetValue(ignoreEos))
                r.AddError("structured output (--json-schema, --json-object) ends each output with an end-of-sequence token; leave out --ignore-eos");
        });
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var samplingOptions = sampling.Parse(parse);
            // The demo's first run should print the same text every time: greedy unless the user chose sampling.
            bool userSampling = new Option[] { sampling.Temperature, sampling.TopK, sampling.TopP, sampling.MinP, sampling.RepetitionPenalty, sampling.Seed }
                .Any(o => parse.GetResult(o) is { Implicit: false });
            string dir = ModelOptions.ResolveModelDir(parse.GetValue(model), io, allowDemo: true, [ModelOptions.DefaultModelDir], out bool isDemo,
                userSampling ? null : $"greedy decoding with seed {DemoSeed}, so every run prints the same text (--temperature or --seed samples)");
            if (isDemo && !userSampling)
                samplingOptions = samplingOptions with { Temperature = 0f, Seed = DemoSeed };
            bool includeSpecial = parse.GetValue(special);
            string? jsonl = parse.GetValue(promptsFile);
            var textPrompts = (parse.GetValue(prompt) ?? []).Concat((parse.GetValue(promptFile) ?? []).Select(f => ReadPromptFile(f, input))).ToArray();
            var tokenPrompts = (parse.GetValue(tokens) ?? []).Select(ModelOptions.ParseTokens).ToArray();
            var stopStrings = parse.GetValue(stop) ?? [];
            LlamaTokenizer? tokenizer = tokenPrompts.Length == 0 ? ModelOptions.LoadTokenizer(dir, alternative: "or give the prompt as --tokens ids") : TryTokenizer(dir);
            if (stopStrings.Length > 0 && tokenizer is null)
                throw new ArgumentException($"--stop needs the model's tokenizer, and {dir} has none; stop on token ids with a tokenizer-less model is not supported");
            var grammar = parse.GetValue(jsonObject) ? JsonGrammar.AnyObject : parse.GetValue(jsonSchema) is { } schemaFile ? ReadSchema(schemaFile) : null;
            if (grammar is not null && tokenizer is null)
                throw new ArgumentException($"structured output needs the model's tokenizer (its token bytes), and {dir} has none");
            if (grammar is not null && parse.GetValue(maxNew) < grammar.MinBytes)
                throw new ArgumentException($"--max-new-tokens {parse.GetValue(maxNew)} is too few for the schema: its shortest JSON text has {grammar.MinBytes} bytes; give at least --max-new-tokens {grammar.MinBytes}");
            PromptInput[] prompts;
            if (jsonl is not null)
                prompts = ReadPromptsFile(jsonl, tokenizer!);
            else if (tokenPrompts.Length > 0)
                prompts = tokenPrompts.Select(t => new PromptInput(t, null)).ToArray();
            else
            {
                if (textPrompts.Length == 0)
                {
                    textPrompts = [DefaultPrompt];
                    io.Err.WriteLine($"no --prompt given: using \"{DefaultPrompt}\"");
                }
                prompts = textPrompts.Select(t => new PromptInput(tokenizer!.Encode(t, addBos: true), t)).ToArray();
            }

            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, engine.Engine(parse, io), io);
            // Every prompt is known up front, so the queue holds them all. No prefix reuse: each
            // prompt's output must not depend on what ran before it in its slot (reused keys and
            // values round differently from a fresh prefill's).
            using var llamaEngine = LlamaEngine.FromModel(llama, tokenizer, new SchedulerOptions { MaxQueuedRequests = int.MaxValue, PrefixReuse = false });
            var handles = Submit(llamaEngine, prompts, i => new GenerationSettings
            {
                MaxNewTokens = parse.GetValue(maxNew),
                Sampling = samplingOptions,
                StopStrings = stopStrings,
                IgnoreEos = parse.GetValue(ignoreEos),
                IncludeSpecial = includeSpecial,
                SamplingStream = i,
                Logprobs = parse.GetValue(logprobs),
                ResponseFormat = grammar,
            });

            bool asJson = parse.GetValue(json);
            var started = Stopwatch.StartNew();
            var results = new RequestResult[handles.Length];
            if (!asJson && jsonl is null && prompts.Length == 1 && tokenizer is not null)
            {
                // One prompt streams: each token's text as soon as it is certain.
                // Structured output prints the JSON alone, so that stdout parses.
                io.Out.Write(grammar is null ? prompts[0].Echo ?? "" : "");
                io.Out.Flush();
                foreach (var t in handles[0].Tokens.ReadAllAsync().ToBlockingEnumerable())
                {
                    io.Out.Write(t.Text);
                    io.Out.Flush();
                }
                io.Out.WriteLine();
                results[0] = handles[0].Completion.GetAwaiter().GetResult();
            }
            else
            {
                var progress = new ProgressLine(io, handles.Length);
                for (int i = 0; i < handles.Length; i++)
                {
                    // Printed in input order; later prompts keep running meanwhile.
                    while (!handles[i].Completion.Wait(TimeSpan.FromMilliseconds(250)))
                        progress.Draw(handles.Count(h => h.Completion.IsCompleted), llamaEngine.Advanced.Scheduler.Stats, started.Elapsed);
                    var r = results[i] = handles[i].Completion.GetAwaiter().GetResult();
                    progress.Draw(handles.Count(h => h.Completion.IsCompleted), llamaEngine.Advanced.Scheduler.Stats, started.Elapsed);
                    if (jsonl is not null)
                    {
                        io.Out.WriteLine(JsonSerializer.Serialize(new PromptResultJson(i, tokenizer is null ? null : r.Text, Finish(r.FinishReason), r.PromptTokens.Count, r.GeneratedTokens.Count, r.GeneratedTokens), JsonLines));
                        io.Out.Flush();
                    }
                    else if (!asJson)
                    {
                        io.Out.WriteLine($"=== sequence {i + 1} ({r.GeneratedTokens.Count} tokens, {Finish(r.FinishReason)}) ===");
                        io.Out.WriteLine(tokenizer is null
                            ? string.Join(",", r.GeneratedTokens)
                            : (prompts[i].Echo ?? tokenizer!.Decode(prompts[i].Tokens, includeSpecial)) + r.Text);
                        io.Out.Flush();
                    }
                }
                progress.End();
            }

            foreach (var w in llama.Warnings.Where(w => w.Template.StartsWith("CUDA graph", StringComparison.Ordinal)))
                io.Err.WriteLine($"warning: {CliNames.Render(w)}");
            // The JSON report's text of each sequence is the engine's (stop strings cut), found by its token list.
            var texts = new Dictionary<object, string?>(ReferenceEqualityComparer.Instance);
            foreach (var r in results)
                texts[r.GeneratedTokens] = tokenizer is null ? null : r.Text;
            var report = BuildJson(dir, device, llama, ToGenerationResult(results, llamaEngine.Advanced.Scheduler.Stats), samplingOptions.IsGreedy ? null : samplingOptions.Seed,
                ids => texts.TryGetValue(ids, out var text) ? text : tokenizer?.Decode(ids, includeSpecial));
            if (asJson)
                io.WriteJson(report);
            WriteStats(io, report, llama);
            return 0;
        });
        return command;
    }

    static readonly JsonSerializerOptions JsonLines = new(CommandIO.JsonOptions) { WriteIndented = false };

    static string Finish(FinishReason reason) => reason.ToString().ToLowerInvariant();

    /// <summary>Queues every prompt; a prompt that cannot run fails the command before any output, naming it.</summary>
    static ScheduledRequest[] Submit(LlamaEngine engine, PromptInput[] prompts, Func<int, GenerationSettings> settings)
    {
        var handles = new List<ScheduledRequest>();
        for (int i = 0; i < prompts.Length; i++)
        {
            try
            {
                handles.Add(engine.Submit(prompts[i].Tokens, settings(i)));
            }
            catch (EngineArgumentException e)
            {
                foreach (var h in handles)
                    h.Cancel();
                throw prompts.Length == 1 ? e : new EngineArgumentException($"prompt {i + 1}: {e.Template}", e.Parameter, e);
            }
        }
        return [.. handles];
    }

    /// <summary>The old one-call result shape (sequences + speed), for the JSON report and the stats lines.</summary>
    static GenerationResult ToGenerationResult(RequestResult[] results, SchedulerStats stats) =>
        new(results.Select(r => new GeneratedSequence(r.PromptTokens, r.GeneratedTokens, r.FinishReason) { Logprobs = r.Logprobs }).ToArray(), (int)stats.PrefillTokens, stats.PrefillSeconds,
            (int)stats.DecodeTokens, stats.DecodeSeconds, (int)stats.DecodeSteps, stats.DecodeHostSeconds);

    /// <summary>Reads and compiles --json-schema FILE; a missing file or a schema the grammar cannot take is one line naming it.</summary>
    static JsonGrammar ReadSchema(string path)
    {
        if (Directory.Exists(path))
            throw new ArgumentException($"--json-schema '{path}' is a directory; give the file holding the JSON schema");
        if (!File.Exists(path))
            throw new FileNotFoundException($"--json-schema '{path}' does not exist; give a file holding a JSON schema, e.g. {{\"type\": \"object\", \"properties\": {{\"name\": {{\"type\": \"string\"}}}}}}");
        try
        {
            return JsonGrammar.FromSchema(IlgpuLlama.IO.InputFile.ReadAllText(path));
        }
        catch (JsonSchemaException e)
        {
            throw new ArgumentException($"--json-schema {path}: {e.Message}");
        }
    }

    static string ReadPromptFile(string path, Func<TextReader> input)
    {
        if (path == "-")
            return input().ReadToEnd();
        if (!File.Exists(path))
            throw new FileNotFoundException($"--prompt-file '{path}' does not exist; give a text file, or - for stdin");
        return IlgpuLlama.IO.InputFile.ReadAllText(path);
    }

    /// <summary>Reads --prompts-file: one {"prompt": text} or {"messages": [...]} object per non-empty line.</summary>
    static PromptInput[] ReadPromptsFile(string path, LlamaTokenizer tokenizer)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"--prompts-file '{path}' does not exist; give a JSONL file with one {{\"prompt\": ...}} or {{\"messages\": [...]}} per line");
        var prompts = new List<PromptInput>();
        int lineNumber = 0;
        foreach (string line in IlgpuLlama.IO.InputFile.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
                continue;
            string where = $"--prompts-file {path} line {lineNumber}";
            try
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("prompt", out var p) && p.ValueKind == JsonValueKind.String)
                    prompts.Add(new PromptInput(tokenizer.Encode(p.GetString()!, addBos: true), p.GetString()));
                else if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("messages", out var m) && m.ValueKind == JsonValueKind.Array)
                {
                    var messages = m.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Object
                        && e.TryGetProperty("role", out var role) && role.ValueKind == JsonValueKind.String
                        && e.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String
                            ? new ChatMessage(role.GetString()!, content.GetString()!)
                            : throw new ArgumentException($"{where}: every message needs a string \"role\" and \"content\"")).ToList();
                    if (messages.Count == 0)
                        throw new ArgumentException($"{where}: \"messages\" is empty; give at least one message");
                    prompts.Add(new PromptInput(ChatTemplate.Encode(tokenizer, messages, addGenerationPrompt: true), null));
                }
                else
                    throw new ArgumentException($"{where}: expected {{\"prompt\": \"...\"}} or {{\"messages\": [...]}}");
            }
            catch (JsonException e)
            {
                throw new ArgumentException($"{where} is not JSON ({e.Message.Split('.')[0]}); each line must be one object such as {{\"prompt\": \"Hello\"}}");
            }
        }
        if (prompts.Count == 0)
            throw new ArgumentException($"--prompts-file '{path}' has no prompts; give one JSON object per line");
        return [.. prompts];
    }

    /// <summary>Progress of many prompts on stderr: redrawn in place on a terminal, a line per tenth otherwise.</summary>
    sealed class ProgressLine(CommandIO io, int total)
    {
        int lastTenth = -1;
        bool drawn;

        public void Draw(int done, SchedulerStats stats, TimeSpan elapsed)
        {
            if (total < 2)
                return;
            int tenth = done * 10 / total;
            if (!io.ErrIsTerminal && tenth == lastTenth)
                return;
            lastTenth = tenth;
            double seconds = Math.Max(elapsed.TotalSeconds, 1e-9);
            long generated = stats.DecodeTokens + done; // each prompt's first token comes from its prefill
            string line = $"[{new string('#', tenth * 2)}{new string('.', 20 - tenth * 2)}] {done}/{total} prompts, {generated} tokens, {generated / seconds:F1} tok/s, " +
                $"prefill {stats.PrefillTokens / seconds:F1} tok/s";
            if (io.ErrIsTerminal)
                io.Err.Write($"\r{line}");
            else
                io.Err.WriteLine(line);
            drawn = true;
        }

        public void End()
        {
            if (drawn && io.ErrIsTerminal)
                io.Err.WriteLine();
        }
    }

    static LlamaTokenizer? TryTokenizer(string dir)
    {
        try
        {
            return ModelOptions.LoadTokenizer(dir);
        }
        catch (TokenizerException e) when (e.NoTokenizerFile)
        {
            return null;
        }
    }

    /// <summary>The JSON report of a generation (also used by the device check).</summary>
    public static GenerateJson BuildJson(string dir, ComputeDevice device, LlamaModel llama, GenerationResult result, ulong? seed, Func<IReadOnlyList<int>, string?> text)
    {
        var plan = llama.Plan;
        var a = llama.Allocator;
        var memory = new MemoryJson(plan.ParameterCount, plan.WeightBytes, plan.KvCacheBytes, plan.ActivationBytes, plan.TotalBytes,
            a.LiveBytes(MemoryCategory.Weights), a.LiveBytes(MemoryCategory.KvCache), a.LiveBytes(MemoryCategory.Activations), a.TotalLiveBytes)
        {
            Dtype = llama.Layout.Name,
            KvCacheDtype = plan.Shape.KvCache.Name(),
            Accumulate = llama.Options.Accumulation.Name(),
        };
        var sequences = result.Sequences.Select(s => new SequenceJson(s.PromptTokens, s.GeneratedTokens, text(s.GeneratedTokens), s.FinishReason.ToString().ToLowerInvariant())
        {
            Logprobs = s.Logprobs?.Select(t => new TokenLogprobJson(t.Id, t.Logprob, t.Top.Select(e => e.Id).ToArray(), t.Top.Select(e => e.Logprob).ToArray())).ToArray(),
        }).ToList();
        return new GenerateJson(dir, device.Description, sequences, result.PrefillTokens, result.PrefillSeconds, result.PrefillTokensPerSecond,
            result.DecodeTokens, result.DecodeSeconds, result.DecodeTokensPerSecond,
            result.DecodeSteps > 0 ? result.DecodeSeconds * 1000 / result.DecodeSteps : 0, llama.UseGraphs, seed, memory,
            llama.Kernels.DirectLaunches, llama.DecodeLaunchesPerStep, llama.RecordedGraphs);
    }

    /// <summary>Speed and memory lines on stderr.</summary>
    public static void WriteStats(CommandIO io, GenerateJson r, LlamaModel llama)
    {
        io.Err.WriteLine($"prefill: {r.PrefillTokens} tokens in {r.PrefillSeconds * 1000:F1} ms = {r.PrefillTokensPerSecond:F1} tok/s");
        if (r.DecodeTokens > 0)
        {
            // Each decode step reads every weight once plus the live part of the KV cache; weights dominate.
            double bytesPerS = llama.Plan.WeightBytes / (r.DecodeMsPerStep / 1000);
            string rate = bytesPerS >= 1e9 ? $"{bytesPerS / 1e9:F1} GB/s" : $"{bytesPerS / 1e6:F1} MB/s";
            io.Err.WriteLine($"decode:  {r.DecodeTokens} tokens in {r.DecodeSeconds * 1000:F1} ms = {r.DecodeTokensPerSecond:F1} tok/s, " +
                $"{r.DecodeMsPerStep:F2} ms/step, >= {rate} of weights{(r.CudaGraph ? " (CUDA graph)" : "")}");
        }
        if (r.Seed is { } seed)
            io.Err.WriteLine($"seed: {seed}");
        io.Err.WriteLine($"memory: {ModelOptions.MemorySummary(llama)}");
    }
}
