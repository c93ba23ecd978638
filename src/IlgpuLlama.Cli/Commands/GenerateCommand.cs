using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama generate</c>: text (or token ids) in, text out. With no --model and no
/// weights/Llama-3.2-1B it runs the built-in demo model end to end, greedily unless a sampling flag
/// is given, so a first run is reproducible. Special tokens print only with --special. One prompt streams; several
/// are printed as each finishes. Speed and memory go to stderr; --json puts everything on stdout.
/// </summary>
public static class GenerateCommand
{
    /// <summary>Default prompt when neither --prompt nor --tokens is given.</summary>
    public const string DefaultPrompt = "The quick brown fox";

    /// <summary>Seed of the demo run when no sampling flag is given (it decodes greedily, so the seed only completes the record).</summary>
    public const ulong DemoSeed = 1;

    public sealed record SequenceJson(IReadOnlyList<int> PromptTokens, IReadOnlyList<int> GeneratedTokens, string? Text, string FinishReason);

    public sealed record MemoryJson(long ParameterCount, long WeightBytes, long KvCacheBytes, long ActivationBytes, long TotalBytes,
        long AllocatedWeights, long AllocatedKvCache, long AllocatedActivations, long AllocatedTotal);

    public sealed record GenerateJson(string Model, string Device, IReadOnlyList<SequenceJson> Sequences, int PrefillTokens, double PrefillSeconds,
        double PrefillTokensPerSecond, int DecodeTokens, double DecodeSeconds, double DecodeTokensPerSecond, double DecodeMsPerStep,
        bool CudaGraph, ulong? Seed, MemoryJson Memory);

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face Llama 3 model directory (default: weights/Llama-3.2-1B, else the built-in demo)", HelpName = "DIR" };
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text (repeat for a batch)", AllowMultipleArgumentsPerToken = false };
        var tokens = new Option<string[]>("--tokens") { Description = "Prompt as token ids, e.g. 128000,9906 (repeat for a batch; works without tokenizer files)" };
        var maxNew = CliOptions.Integer("--max-new-tokens", "New tokens per sequence at most", 64, 1);
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Do not stop at end-of-sequence tokens (benchmarks)" };
        var special = new Option<bool>("--special") { Description = "Print special tokens (<|eot_id|>, reserved tokens) by name; by default they print nothing" };
        var json = CliOptions.Json();
        var sampling = new SamplingFlags();
        var engine = new ModelOptions();
        var command = new Command("generate", "Generate text for one or more prompts") { model, prompt, tokens, maxNew, ignoreEos, special, json };
        sampling.AddTo(command);
        engine.AddTo(command);
        command.Validators.Add(r =>
        {
            if ((r.GetValue(prompt)?.Length ?? 0) > 0 && (r.GetValue(tokens)?.Length ?? 0) > 0)
                r.AddError("give prompts either as --prompt text or as --tokens ids, not both");
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
            var textPrompts = parse.GetValue(prompt) ?? [];
            var tokenPrompts = (parse.GetValue(tokens) ?? []).Select(ModelOptions.ParseTokens).ToArray();
            LlamaTokenizer? tokenizer = null;
            if (tokenPrompts.Length == 0)
            {
                tokenizer = ModelOptions.LoadTokenizer(dir, alternative: "or give the prompt as --tokens ids");
                if (textPrompts.Length == 0)
                {
                    textPrompts = [DefaultPrompt];
                    io.Err.WriteLine($"no --prompt given: using \"{DefaultPrompt}\"");
                }
            }
            else
            {
                tokenizer = TryTokenizer(dir);
            }
            IReadOnlyList<int>[] prompts = tokenPrompts.Length > 0
                ? tokenPrompts
                : textPrompts.Select(t => tokenizer!.Encode(t, addBos: true)).ToArray();

            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, engine.Engine(parse, io), io);
            var stops = new HashSet<int>();
            if (!parse.GetValue(ignoreEos))
            {
                stops.UnionWith(llama.Config.EosTokenIds);
                if (tokenizer is not null)
                    stops.UnionWith(tokenizer.StopIds);
            }
            var options = new GenerationOptions { MaxNewTokens = parse.GetValue(maxNew), Sampling = samplingOptions, StopTokens = stops };
            bool asJson = parse.GetValue(json);
            bool stream = !asJson && prompts.Length == 1 && tokenizer is not null;
            var decoder = stream ? new StreamingDecoder(tokenizer!, includeSpecial) : null;
            if (stream)
            {
                io.Out.Write(textPrompts.Length == 1 ? textPrompts[0] : "");
                io.Out.Flush();
            }

            var result = new Generator(llama).Generate(prompts, options, (seq, token) =>
            {
                if (decoder is null || stops.Contains(token))
                    return;
                io.Out.Write(decoder.Push(token));
                io.Out.Flush();
            });

            string? Text(IReadOnlyList<int> ids) => tokenizer?.Decode(ids.Where(t => !stops.Contains(t)), includeSpecial);
            if (decoder is not null)
            {
                io.Out.WriteLine(decoder.Flush());
            }
            else if (!asJson)
            {
                for (int i = 0; i < prompts.Length; i++)
                {
                    var s = result.Sequences[i];
                    io.Out.WriteLine($"=== sequence {i + 1} ({s.GeneratedTokens.Count} tokens, {s.FinishReason.ToString().ToLowerInvariant()}) ===");
                    io.Out.WriteLine(tokenizer is null
                        ? string.Join(",", s.GeneratedTokens)
                        : (textPrompts.Length > i ? textPrompts[i] : tokenizer.Decode(prompts[i], includeSpecial)) + Text(s.GeneratedTokens));
                }
            }

            foreach (var w in llama.Warnings.Where(w => w.Template.StartsWith("CUDA graph", StringComparison.Ordinal)))
                io.Err.WriteLine($"warning: {CliNames.Render(w)}");
            var report = BuildJson(dir, device, llama, result, samplingOptions.IsGreedy ? null : samplingOptions.Seed, Text);
            if (asJson)
                io.WriteJson(report);
            WriteStats(io, report, llama);
            return 0;
        });
        return command;
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
            a.LiveBytes(MemoryCategory.Weights), a.LiveBytes(MemoryCategory.KvCache), a.LiveBytes(MemoryCategory.Activations), a.TotalLiveBytes);
        var sequences = result.Sequences.Select(s => new SequenceJson(s.PromptTokens, s.GeneratedTokens, text(s.GeneratedTokens), s.FinishReason.ToString().ToLowerInvariant())).ToList();
        return new GenerateJson(dir, device.Description, sequences, result.PrefillTokens, result.PrefillSeconds, result.PrefillTokensPerSecond,
            result.DecodeTokens, result.DecodeSeconds, result.DecodeTokensPerSecond,
            result.DecodeSteps > 0 ? result.DecodeSeconds * 1000 / result.DecodeSteps : 0, llama.UseGraphs, seed, memory);
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
