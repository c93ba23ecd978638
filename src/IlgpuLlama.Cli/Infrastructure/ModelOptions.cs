using System.CommandLine;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Gguf;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// The engine options every model command shares (--max-batch-size, --max-seq-len, --dtype,
/// --kv-cache-dtype, --accumulate, --prefill-chunk, --no-cuda-graph, --log-allocations, --device), how a model is found, and how
/// it is loaded with a progress bar on stderr.
/// </summary>
public sealed class ModelOptions
{
    /// <summary>Where real weights are looked for when --model is not given.</summary>
    public const string DefaultModelDir = "weights/Llama-3.2-1B";

    /// <summary>Where weights/README.md puts the Instruct model, which chat looks for first.</summary>
    public const string InstructModelDir = "weights/Llama-3.2-1B-Instruct";

    /// <summary>chat's default models in order: the Instruct model it is made for, then the base model.</summary>
    public static IReadOnlyList<string> ChatModelDirs { get; } = [InstructModelDir, DefaultModelDir];

    public Option<DeviceKind> Device { get; } = CliOptions.Device();
    public Option<int> MaxBatchSize { get; } = CliOptions.Integer("--max-batch-size", $"Sequences decoded together (KV-cache slots), 1..{WorkspaceShape.MaxSequences}", 4, 1, WorkspaceShape.MaxSequences);
    public Option<int?> MaxSeqLen { get; } = CliOptions.OptionalInteger("--max-seq-len",
        $"Positions per sequence in the KV cache (prompt + new tokens), up to the model's max_position_embeddings (default: the longest that fits the device, at most {WorkspaceShape.DefaultContextCap}, {WorkspaceShape.DefaultCpuContextCap} on the CPU accelerator)", 1);
    public Option<string> DType { get; } = CliOptions.DType(followsModel: true);
    public Option<string> KvCacheDType { get; } = CliOptions.KvCacheDType();
    public Option<string> Accumulate { get; } = CliOptions.Accumulate();
    public Option<int?> PrefillChunk { get; } = CliOptions.OptionalInteger("--prefill-chunk", "Prompt tokens per prefill pass (default: min(batch x seq, 2048))", 1);
    public Option<bool> NoCudaGraph { get; } = new("--no-cuda-graph") { Description = "Launch every decode kernel from the host instead of replaying a CUDA graph" };
    public Option<bool> LogAllocations { get; } = new("--log-allocations") { Description = "Print every device allocation and free to stderr" };
    public Option<string> DecodeVariant { get; } = new("--decode-variant")
    {
        Description = "How the decode step runs: " + string.Join("; ", IlgpuLlama.Engine.DecodeVariant.All.Select(v => $"{v.Name} = {v.Description}")),
        DefaultValueFactory = _ => IlgpuLlama.Engine.DecodeVariant.Baseline.Name,
        HelpName = string.Join("|", IlgpuLlama.Engine.DecodeVariant.All.Select(v => v.Name)),
    };

    public ModelOptions()
    {
        DecodeVariant.AcceptOnlyFromAmong([.. IlgpuLlama.Engine.DecodeVariant.All.Select(v => v.Name)]);
    }

    /// <summary>Adds every option to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Device, MaxBatchSize, MaxSeqLen, DType, KvCacheDType, Accumulate, PrefillChunk, NoCudaGraph, DecodeVariant, LogAllocations })
            command.Options.Add(o);
        // Refused before anything loads (the engine would refuse it at load too, after reading the weights).
        command.Validators.Add(r =>
        {
            if (r.GetValue(DecodeVariant) == IlgpuLlama.Engine.DecodeVariant.Persistent.Name && r.GetValue(KvCacheDType) is { } kv && kv != KvCacheType.Fp16.Name())
                r.AddError($"--decode-variant persistent reads an fp16 KV cache; with --kv-cache-dtype {kv} use --decode-variant fused-norm");
            if (r.GetValue(Accumulate) == IlgpuLlama.Engine.Accumulation.Fp64.Name() && r.GetValue(DecodeVariant) is { } v && v != IlgpuLlama.Engine.DecodeVariant.Baseline.Name)
                r.AddError($"--accumulate fp64 runs the decode layers as the prefill does and takes --decode-variant baseline, not {v}; leave --decode-variant out");
        });
    }

    /// <summary>Weight format from --dtype.</summary>
    public WeightFormat? Format(ParseResult p) => p.GetValue(DType) is { } name && WeightMix.Find(name) is null ? WeightFormat.Parse(name) : null;

    /// <summary>K-quant mix from --dtype (q4_k_m, q5_k_m), or null.</summary>
    public WeightMix? Mix(ParseResult p) => p.GetValue(DType) is { } name ? WeightMix.Find(name) : null;

    /// <summary>Engine options from the parsed flags.</summary>
    public EngineOptions Engine(ParseResult p, CommandIO io, int? maxSeqOverride = null) => new()
    {
        MaxBatchSize = p.GetValue(MaxBatchSize),
        MaxSeqLen = maxSeqOverride ?? p.GetValue(MaxSeqLen),
        WeightFormat = Format(p),
        WeightMix = Mix(p),
        KvCacheType = CliOptions.KvCacheTypeOf(p, KvCacheDType),
        Accumulation = Accumulations.Parse(p.GetValue(Accumulate)!) ?? IlgpuLlama.Engine.Accumulation.Fp32,
        PrefillChunk = p.GetValue(PrefillChunk),
        DecodeLaunch = p.GetValue(NoCudaGraph) ? DecodeLaunch.Direct : DecodeLaunch.Auto,
        DecodeVariant = IlgpuLlama.Engine.DecodeVariant.Parse(p.GetValue(DecodeVariant)!),
        AllocationLog = p.GetValue(LogAllocations) ? line => io.Err.WriteLine($"[alloc] {line}") : null,
    };

    /// <summary>
    /// The model directory: --model if given; else weights/Llama-3.2-1B if present; else the
    /// built-in demo, created on first use (the notice says so on stderr).
    /// </summary>
    public static string ResolveModelDir(string? model, CommandIO io, bool allowDemo) =>
        ResolveModelDir(model, io, allowDemo, [DefaultModelDir], out _);

    /// <summary>
    /// The model directory: --model if given; else the first of <paramref name="candidates"/> that
    /// holds a config.json; else, when <paramref name="allowDemo"/>, the built-in demo, created on first
    /// use, with one line on stderr saying so (<paramref name="demoNote"/> appended to that line).
    /// </summary>
    public static string ResolveModelDir(string? model, CommandIO io, bool allowDemo, IReadOnlyList<string> candidates, out bool isDemo,
        string? demoNote = null)
    {
        isDemo = false;
        if (model is not null && string.IsNullOrWhiteSpace(model))
            throw new ArgumentException($"--model '{model}' is empty; give a model directory, or leave --model out to use {string.Join(" or ", candidates)}" +
                (allowDemo ? " (else the built-in demo)" : ""));
        if (!string.IsNullOrEmpty(model))
        {
            if (GgufLocation.IsGguf(model))
                return model;
            if (!Directory.Exists(model))
                throw new DirectoryNotFoundException($"--model '{model}' is not a directory or a .gguf file; pass a Hugging Face Llama 3 model directory, a .gguf file or ollama:NAME (see weights/README.md)");
            return model;
        }
        if (FindDefaultModelDir(".", candidates) is { } found)
            return found;
        string looked = string.Join(" or ", candidates);
        if (!allowDemo)
            throw new ArgumentException($"--model DIR is required (no {looked} found; see weights/README.md)");
        io.Err.WriteLine($"demo: no --model given and no {looked} found, so this runs the built-in tiny Llama-3-architecture model with random weights (its text is gibberish)" +
            (demoNote is null ? "" : $"; {demoNote}") +
            $"; for real text: huggingface-cli download meta-llama/{Path.GetFileName(candidates[0])} --local-dir {candidates[0]}");
        isDemo = true;
        return DemoModel.Ensure("weights");
    }

    /// <summary>
    /// The first of <paramref name="candidates"/> (paths relative to <paramref name="baseDirectory"/>)
    /// that holds a config.json, as a path under <paramref name="baseDirectory"/>; null if none does.
    /// </summary>
    public static string? FindDefaultModelDir(string baseDirectory, IReadOnlyList<string> candidates)
    {
        foreach (string candidate in candidates)
        {
            string dir = Path.Combine(baseDirectory, candidate);
            if (File.Exists(Path.Combine(dir, "config.json")))
                return baseDirectory == "." ? candidate : dir;
        }
        return null;
    }

    /// <summary>Loads a model directory, drawing upload progress on stderr.</summary>
    public static LlamaModel Load(ComputeDevice device, string dir, EngineOptions options, CommandIO io)
    {
        var config = ModelLocation.Config(dir);
        io.Err.WriteLine($"loading {dir} ({config.NumHiddenLayers} layers, hidden {config.HiddenSize}, vocab {config.VocabSize}) on {device.Description}");
        var started = DateTime.UtcNow;
        int lastDecile = -1;
        var progress = new Progress<UploadProgress>(p =>
        {
            int decile = p.TotalBytes == 0 ? 10 : (int)(p.DoneBytes * 10 / p.TotalBytes);
            if (decile > lastDecile && p.TotalBytes > (64 << 20))
            {
                lastDecile = decile;
                io.Err.Write($"\r  weights {p.DoneBytes / 1e9:F2} / {p.TotalBytes / 1e9:F2} GB [{new string('#', decile)}{new string('.', 10 - decile)}]");
            }
        });
        var model = LlamaModel.Load(device, dir, options, progress);
        if (lastDecile >= 0)
            io.Err.WriteLine();
        io.Err.WriteLine($"loaded in {(DateTime.UtcNow - started).TotalSeconds:F1} s: {MemorySummary(model)}");
        if (io.Verbose)
        {
            var t = model.Timings;
            io.Err.WriteLine($"load time: device {device.CreationTime.TotalSeconds:F2} s (ILGPU context and accelerator), files {t.Files.TotalSeconds:F2} s, plan {t.Plan.TotalSeconds:F2} s, " +
                $"allocation {t.Allocation.TotalSeconds:F2} s, kernel compilation {t.Compilation.TotalSeconds:F2} s ({t.KernelsCompiled} specialisations), weights {t.Weights.TotalSeconds:F2} s");
        }
        if (options.MaxSeqLen is null)
            io.Err.WriteLine($"context: {model.MaxSeq} positions per sequence, the longest that fits beside the weights at batch {model.MaxBatch} " +
                $"(at most {Math.Min(model.Config.MaxPositionEmbeddings, LlamaModel.DefaultContextCap(device.Accelerator))}{(device.IsCuda ? "" : " on the CPU accelerator")}; the model allows {model.Config.MaxPositionEmbeddings}); --max-seq-len sets it");
        foreach (var w in model.Warnings)
            io.Err.WriteLine($"warning: {CliNames.Render(w)}");
        return model;
    }

    /// <summary>The load line: parameters (GB in their format), KV cache (GB in its type), activations, allocated total.</summary>
    public static string MemorySummary(LlamaModel model)
    {
        var plan = model.Plan;
        var a = model.Allocator;
        string parameters = plan.ParameterCount >= 1_000_000_000 ? $"{plan.ParameterCount / 1e9:F2}B" : $"{plan.ParameterCount / 1e6:F2}M";
        return $"{parameters} params ({DeviceAllocator.Gb(plan.WeightBytes)} @ {plan.BitsPerWeight:0.##} bits, {(plan.Layout.IsMixed ? plan.Layout.Describe(model.Config) : plan.Format.Name)}), " +
            $"KV cache {DeviceAllocator.Gb(plan.KvCacheBytes)} @ {plan.Shape.KvCache.Name()} for {plan.Shape.MaxBatch} x {plan.Shape.MaxSeq} tokens, " +
            $"activations {DeviceAllocator.Gb(plan.ActivationBytes)}{(model.Options.Accumulation == Accumulation.Fp64 ? ", float64 accumulation" : "")}; allocated {a.TotalLiveBytes:N0} B (formula {plan.TotalBytes:N0} B)";
    }

    /// <summary>
    /// The tokenizer of a model directory, checked against its config.json's vocab_size at load (not
    /// when a generated id cannot be printed). <paramref name="alternative"/> is appended when there is
    /// no tokenizer file (generate: "or give --tokens ids"); other commands have no way around one.
    /// </summary>
    public static LlamaTokenizer LoadTokenizer(string dir, string? alternative = null)
    {
        LlamaTokenizer tokenizer;
        // vocab_size bounds the ids tokenizer.json may give its added tokens.
        bool gguf = GgufLocation.IsGguf(dir);
        int? vocabSize = gguf || File.Exists(Path.Combine(dir, "config.json")) ? ModelLocation.Config(dir).VocabSize : null;
        try
        {
            tokenizer = LlamaTokenizer.FromModel(dir, vocabSize);
        }
        catch (TokenizerException e) when (e.NoTokenizerFile && alternative is not null)
        {
            throw new TokenizerException($"{e.Template}, {alternative}", e) { NoTokenizerFile = true };
        }
        if (vocabSize is int v)
            tokenizer.EnsureMatches(v, dir);
        return tokenizer;
    }

    /// <summary>
    /// The config of --model DIR|PRESET (memory, bench e2e): a directory's config.json, else a preset; a
    /// value that looks like a path but is no directory says so instead of "unknown preset".
    /// </summary>
    public static LlamaConfig ConfigOfDirOrPreset(string name)
    {
        if (string.IsNullOrWhiteSpace(name))
            throw new ArgumentException($"--model '{name}' is empty; give a model directory or one of the presets {string.Join(", ", LlamaConfig.PresetNames)}");
        if (GgufLocation.IsGguf(name) || Directory.Exists(name))
            return ModelLocation.Config(name);
        if (File.Exists(name))
            throw new ArgumentException($"--model '{name}' is a file; give the model's directory (the one holding config.json) or a preset ({string.Join(", ", LlamaConfig.PresetNames)})");
        if (name.Contains('/') || name.Contains('\\') || name.StartsWith('.') || name.StartsWith('~'))
            throw new DirectoryNotFoundException($"--model '{name}' is not a directory (nor one of the presets {string.Join(", ", LlamaConfig.PresetNames)}); give a Hugging Face Llama 3 model directory (see weights/README.md)");
        return LlamaConfig.Preset(name);
    }

    /// <summary>Parses a --tokens value "1,2,3".</summary>
    public static int[] ParseTokens(string text)
    {
        if (string.IsNullOrWhiteSpace(text))
            throw new ArgumentException($"--tokens '{text}' is not a comma-separated list of token ids, e.g. --tokens 128000,9906,4435");
        string[] fields = text.Split(',', StringSplitOptions.TrimEntries);
        // An empty field (1,,2 or a trailing comma) is refused, not skipped: it is a typo or a lost id.
        int empty = Array.FindIndex(fields, f => f.Length == 0);
        if (empty >= 0)
            throw new ArgumentException($"--tokens '{text}' has an empty field (number {empty + 1} of {fields.Length}); separate the ids by single commas, e.g. --tokens 128000,9906,4435");
        try
        {
            return fields.Select(f => int.Parse(f, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        }
        catch (FormatException)
        {
            throw new ArgumentException($"--tokens '{text}' is not a comma-separated list of token ids, e.g. --tokens 128000,9906,4435");
        }
        catch (OverflowException)
        {
            throw new ArgumentException($"--tokens '{text}' has a number out of range");
        }
    }
}
