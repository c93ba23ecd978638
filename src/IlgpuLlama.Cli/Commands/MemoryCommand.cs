using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Gguf;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using Spectre.Console;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama memory</c>: the memory formula for a model at a batch and context, whether it fits
/// on common GPUs, and with --allocate a real allocation through the engine's own code path with
/// the allocator's totals beside the formula.
/// </summary>
public static class MemoryCommand
{
    /// <summary>Allocated bytes per category (the "allocated" JSON object).</summary>
    public sealed record Allocated(long Weights, long KvCache, long Activations, long Total, long DifferenceFromFormula,
        long? DeviceMeasuredBytes, string? DeviceMeasuredNote);

    /// <summary>One device of the fit table.</summary>
    public sealed record FitRow(string Device, long MemoryBytes, bool Fits, long MaxCacheTokens, int MaxSeqAtBatch);

    /// <summary>The report (JSON shape of <c>memory --json</c>).</summary>
    public sealed record MemoryReport(
        string Model, int Batch, int Seq, string Dtype, string KvCacheDtype,
        long ParameterCount, long WeightBytes, string WeightFormula, long KvCacheBytesPerToken, long KvCacheBytes, long ActivationBytes, long TotalBytes,
        IReadOnlyList<MemoryLine> ActivationItems, string RuleOfThumb, IReadOnlyList<FitRow> Fits, Allocated? Allocated);

    static readonly (string Name, double GiB)[] Gpus =
    [
        ("P100 16 GB", 16), ("V100 16 GB", 16), ("V100 32 GB", 32), ("A100 40 GB", 40), ("A100 80 GB", 80), ("H100 80 GB", 80),
    ];

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model directory, .gguf file, ollama:NAME[:TAG], or preset (llama-3.2-1b, llama-3.2-3b, llama-3.1-8b)", Required = true, HelpName = "DIR|GGUF|PRESET" };
        var batch = CliOptions.Integer("--batch", "Sequences (KV-cache slots)", 4, 1);
        var seq = CliOptions.Integer("--seq", "Positions per sequence", 256, 1);
        var dtype = CliOptions.DType(followsModel: true);
        var kvDType = CliOptions.KvCacheDType();
        var allocate = new Option<bool>("--allocate") { Description = "Really allocate weights (from DIR, zero-filled for a preset), KV cache and workspace on the device" };
        var device = CliOptions.Device();
        var logAllocations = new Option<bool>("--log-allocations") { Description = "Print every device allocation to stderr" };
        var json = CliOptions.Json();
        var command = new Command("memory", "The memory formula: weights + KV cache + activations, and what fits where")
        {
            model, batch, seq, dtype, kvDType, allocate, device, logAllocations, json,
        };
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            string name = parse.GetValue(model)!;
            bool isDir = Directory.Exists(name) || GgufLocation.IsGguf(name);
            var config = ModelOptions.ConfigOfDirOrPreset(name);
            var asked = parse.GetValue(dtype) is { } d ? WeightMix.Find(d) is { } mix ? new EngineOptions { WeightMix = mix } : new EngineOptions { WeightFormat = WeightFormat.Parse(d) } : new EngineOptions();
            var layout = asked.ResolveLayout(config);
            var format = layout.Main;
            if (parse.GetValue(dtype) is null && GgufLocation.Find(name) is string gguf)
            {
                // A GGUF model loads in its own formats, tensor by tensor, as generate would load it.
                using var source = GgufModel.Open(gguf);
                layout = GgufLlama.DefaultLayout(source, config);
            }
            int b = parse.GetValue(batch), s = parse.GetValue(seq);
            var kvType = CliOptions.KvCacheTypeOf(parse, kvDType);
            if (s > config.MaxPositionEmbeddings)
                throw new ArgumentException($"--seq {s} exceeds the model's max_position_embeddings {config.MaxPositionEmbeddings}");

            MemoryReport report;
            if (parse.GetValue(allocate))
            {
                using var dev = ComputeDevice.Create(parse.GetValue(device));
                var options = new EngineOptions
                {
                    MaxBatchSize = b, MaxSeqLen = s, WeightFormat = asked.WeightFormat, WeightMix = asked.WeightMix, KvCacheType = kvType,
                    AllocationLog = parse.GetValue(logAllocations) ? line => io.Err.WriteLine($"[alloc] {line}") : null,
                };
                long? freeBefore = dev.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator c0 ? c0.GetFreeMemory() : null;
                LlamaModel m;
                try
                {
                    m = isDir ? ModelOptions.Load(dev, name, options, io) : LlamaModel.Create(dev, config, options);
                }
                catch (EngineArgumentException e)
                {
                    throw InOwnFlags(e);
                }
                using var model = m;
                if (!isDir)
                    m.Weights.Zero(dev.Accelerator);
                long? freeAfter = dev.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator c1 ? c1.GetFreeMemory() : null;
                var a = m.Allocator;
                long total = a.TotalLiveBytes;
                var allocated = new Allocated(a.LiveBytes(MemoryCategory.Weights), a.LiveBytes(MemoryCategory.KvCache), a.LiveBytes(MemoryCategory.Activations),
                    total, total - m.Plan.TotalBytes,
                    freeBefore is { } fb && freeAfter is { } fa ? fb - fa : null,
                    freeBefore is null
                        ? dev.Accelerator.AcceleratorType == ILGPU.Runtime.AcceleratorType.CPU
                            ? "CPU accelerator: these figures are reserved host memory, which the operating system commits only as it is written, not resident memory; they may exceed the machine's RAM, and a run fails later when the written part does not fit"
                            : "no driver memory query on this device" :
                        "cuMemGetInfo free-memory drop across loading: includes the allocator's rounding of each buffer to its page granularity and the memory the driver takes for loaded kernel modules");
                report = Build(name, config, b, s, m.Plan, allocated, dev);
            }
            else
            {
                WorkspaceShape shape;
                try
                {
                    shape = WorkspaceShape.For(config, b, s, new KernelTuning(), kvCache: kvType);
                }
                catch (EngineArgumentException e)
                {
                    throw InOwnFlags(e);
                }
                var plan = new MemoryPlan(config, shape, layout);
                report = Build(name, config, b, s, plan, null, null);
            }

            if (parse.GetValue(json))
                io.WriteJson(report);
            else
                Print(io, report);
            return report.Allocated is { DifferenceFromFormula: not 0 } ? 1 : 0;
        });
        return command;
    }

    /// <summary>An engine error in this command's words: it names the engine's batch and context --batch and --seq.</summary>
    static ArgumentException InOwnFlags(EngineArgumentException e) => new(EngineParameters.Render(e.Template, p => p switch
    {
        EngineParameter.MaxBatchSize => "--batch",
        EngineParameter.MaxSeqLen => "--seq",
        _ => CliNames.Flag(p),
    }));

    static MemoryReport Build(string name, LlamaConfig config, int batch, int seq, MemoryPlan plan, Allocated? allocated, ComputeDevice? device)
    {
        string rule = RuleOfThumb(plan.ParameterCount, plan.WeightBytes, (long)config.VocabSize * config.HiddenSize, config, plan.Format);
        var fits = new List<FitRow>();
        foreach (var (gpu, gib) in Gpus)
            fits.Add(Fit(gpu, (long)(gib * (1L << 30)), plan, batch, config.MaxPositionEmbeddings));
        if (device is { IsCuda: true })
            fits.Add(Fit($"this device: {device.Accelerator.Name}", device.Accelerator.MemorySize, plan, batch, config.MaxPositionEmbeddings));
        string formula = plan.Layout.IsMixed
            ? $"each matrix in its own format ({plan.Layout.Describe(config)}): rows x in/block x bytes per block + norms x 2 B"
            : plan.Format.MatrixBytesFormula + (plan.Format.BlockSize > 1 ? " + norms x 2 B" : "");
        return new MemoryReport(name, batch, seq, plan.Layout.Name, plan.Shape.KvCache.Name(),
            plan.ParameterCount, plan.WeightBytes, formula, plan.KvBytesPerToken, plan.KvCacheBytes, plan.ActivationBytes, plan.TotalBytes,
            plan.ActivationLines, rule, fits, allocated);
    }

    /// <summary>
    /// The "N params x 2 B" estimate against the exact weight bytes, both from this model's own size:
    /// N is the parameter count rounded the way model names round it (1.236B is "1B", 270,816 is
    /// "271K"). Sizes in GiB with the decimal GB figure beside, since the rule is usually quoted in GB.
    /// </summary>
    public static string RuleOfThumb(long parameters, long weightBytes, long embeddingParameters, LlamaConfig config, WeightFormat? format = null)
    {
        format ??= WeightFormat.Fp16;
        double bytesPerWeight = format.BitsPerWeight / 8;
        var (scale, unit) = parameters >= 1_000_000_000 ? (1e9, "B") : parameters >= 1_000_000 ? (1e6, "M") : (1e3, "K");
        double exact = parameters / scale;
        double nominal = Math.Max(1, Math.Round(exact));
        long nominalBytes = (long)(nominal * scale * bytesPerWeight);
        string tied = config.TieWordEmbeddings ? " (tied to the output layer, counted once)" : "";
        string perWeight = $"{bytesPerWeight:0.####} B";
        string exactFormula = format.BlockSize == 1
            ? $"{parameters:N0} params x {perWeight}"
            : $"{parameters:N0} params, the matrices at {format.BitsPerWeight:0.##} bits ({format.Name}) and the norms at 2 B";
        return $"rule of thumb: {nominal:0}{unit} params x {perWeight} = {Decimal(nominalBytes)} ({Binary(nominalBytes)}); " +
            $"exact: {exactFormula} = {weightBytes:N0} B ({Binary(weightBytes)}, {Decimal(weightBytes)}). " +
            $"The rounded count hides that the model has {exact:0.000}{unit} parameters, {Count(embeddingParameters)} " +
            $"({100.0 * embeddingParameters / parameters:0}%) of them in the {config.VocabSize:N0} x {config.HiddenSize} embedding{tied}; " +
            "and the KV cache and activations come on top.";
    }

    /// <summary>Bytes in binary units: "2.30 GiB", "32.0 MiB", "529 KiB", "12 B".</summary>
    public static string Binary(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F0} KiB",
        _ => $"{bytes} B",
    };

    static string Decimal(long bytes) => bytes switch
    {
        >= 1_000_000_000 => $"{bytes / 1e9:F2} GB",
        >= 1_000_000 => $"{bytes / 1e6:F2} MB",
        >= 1_000 => $"{bytes / 1e3:F2} KB",
        _ => $"{bytes} B",
    };

    static string Count(long n) => n >= 1_000_000_000 ? $"{n / 1e9:0.0}B" : n >= 1_000_000 ? $"{n / 1e6:0.0}M" : n >= 1_000 ? $"{n / 1e3:0.0}K" : $"{n}";

    // Largest KV cache beside the weights and this workspace; the per-sequence length is also capped by the model's context.
    static FitRow Fit(string name, long bytes, MemoryPlan plan, int batch, int maxPositions)
    {
        long tokens = plan.MaxCacheTokens(bytes);
        return new FitRow(name, bytes, plan.TotalBytes <= bytes, tokens, (int)Math.Min(maxPositions, tokens / batch));
    }

    static void Print(CommandIO io, MemoryReport r)
    {
        var console = CommandIO.Console(io.Out);
        console.WriteLine($"{r.Model}: batch {r.Batch} x seq {r.Seq}, {r.Dtype} weights, {r.KvCacheDtype} KV cache, fp32 activations");
        var t = new Table().AddColumns("item", "formula", "bytes", "size");
        t.Columns[2].RightAligned();
        t.Columns[3].RightAligned();
        t.AddRow("parameters", "tied embeddings counted once", $"{r.ParameterCount:N0}", "");
        t.AddRow("weights", Markup.Escape(r.WeightFormula), $"{r.WeightBytes:N0}", Binary(r.WeightBytes));
        t.AddRow("KV cache per token", $"2 x layers x kv_heads x head_dim x {KvCacheTypes.Parse(r.KvCacheDtype)!.Value.Bytes()} B", $"{r.KvCacheBytesPerToken:N0}", "");
        t.AddRow("KV cache", "batch x seq x per token", $"{r.KvCacheBytes:N0}", Binary(r.KvCacheBytes));
        foreach (var line in r.ActivationItems)
            t.AddRow(Markup.Escape("  " + line.Item), Markup.Escape(line.Formula), $"{line.Bytes:N0}", "");
        t.AddRow("activations", "sum of the lines above", $"{r.ActivationBytes:N0}", Binary(r.ActivationBytes));
        t.AddRow("[bold]total[/]", "weights + KV cache + activations", $"[bold]{r.TotalBytes:N0}[/]", Binary(r.TotalBytes));
        console.Write(t);
        io.Out.WriteLine(r.RuleOfThumb);
        var f = new Table().AddColumns("device", "memory", "fits", "max KV tokens beside weights", $"max seq at batch {r.Batch} (capped by the model context)");
        foreach (var row in r.Fits)
            f.AddRow(Markup.Escape(row.Device), $"{row.MemoryBytes / (double)(1L << 30):F0} GiB", row.Fits ? "yes" : "[red]no[/]", $"{row.MaxCacheTokens:N0}", $"{row.MaxSeqAtBatch:N0}");
        console.Write(f);
        if (r.Allocated is { } a)
        {
            var at = new Table().AddColumns("category", "formula", "allocated", "difference");
            at.AddRow("weights", $"{r.WeightBytes:N0}", $"{a.Weights:N0}", $"{a.Weights - r.WeightBytes:N0}");
            at.AddRow("kv-cache", $"{r.KvCacheBytes:N0}", $"{a.KvCache:N0}", $"{a.KvCache - r.KvCacheBytes:N0}");
            at.AddRow("activations", $"{r.ActivationBytes:N0}", $"{a.Activations:N0}", $"{a.Activations - r.ActivationBytes:N0}");
            at.AddRow("total", $"{r.TotalBytes:N0}", $"{a.Total:N0}", $"{a.DifferenceFromFormula:N0} B");
            console.Write(at);
            console.WriteLine(a.DeviceMeasuredBytes is { } d
                ? $"device-measured (cuMemGetInfo): {d:N0} B, {d - a.Total:N0} B more than the allocator's total ({a.DeviceMeasuredNote})"
                : $"device-measured: n/a ({a.DeviceMeasuredNote})");
        }
    }
}
