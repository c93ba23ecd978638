using System.CommandLine;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>Options shared by several commands, created by factory methods so each command owns its instance.</summary>
public static class CliOptions
{
    /// <summary>--verbose: stack traces on errors, and where a model's load time goes (global).</summary>
    public static Option<bool> Verbose { get; } = new("--verbose", "-v")
    {
        Description = "Show stack traces on errors (same as ILGPU_LLAMA_DEBUG=1) and where a model's load time goes",
        Recursive = true,
    };

    /// <summary>Parses --device values.</summary>
    public static DeviceKind ParseDevice(string value) => value.ToLowerInvariant() switch
    {
        "auto" => DeviceKind.Auto,
        "cuda" or "gpu" => DeviceKind.Cuda,
        "cpu" => DeviceKind.Cpu,
        _ => throw new ArgumentException($"--device '{value}' is not one of auto, cuda, cpu"),
    };

    /// <summary>--device auto|cuda|cpu, parsed with <see cref="ParseDevice"/>.</summary>
    public static Option<DeviceKind> Device()
    {
        var option = new Option<DeviceKind>("--device")
        {
            // No DefaultValueFactory: help would print the enum's name, "[default: Auto]", where the
            // docs and the flag spell it auto; an absent --device is default(DeviceKind), Auto.
            Description = "Accelerator: auto (CUDA if present, else CPU) [default: auto], cuda, or cpu",
            HelpName = "auto|cuda|cpu",
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "auto";
                try
                {
                    return ParseDevice(text);
                }
                catch (ArgumentException e)
                {
                    result.AddError(e.Message);
                    return DeviceKind.Auto;
                }
            },
        };
        option.CompletionSources.Add("auto", "cuda", "cpu");
        return option;
    }

    /// <summary>
    /// --dtype: the weight format on the device, one of <see cref="WeightFormat.Names"/>. With
    /// <paramref name="followsModel"/> it has no default value: the model's stored format (a quantised
    /// directory) or fp16 is used, which <see cref="EngineOptions.ResolveFormat"/> decides.
    /// </summary>
    public static Option<string> DType(string description = "Weight format on the device", bool followsModel = false)
    {
        // A model command also takes a K-quant mix (a format per matrix); the kernel tools take one format.
        string[] names = followsModel ? [.. WeightFormat.Names, .. Model.WeightMix.All.Select(m => m.Name)] : [.. WeightFormat.Names];
        var option = new Option<string>("--dtype")
        {
            Description = $"{description}" + (followsModel ? " (default: a quantized model's or GGUF file's own formats, else fp16)" : "") + ": " +
                string.Join("; ", WeightFormat.All.Select(f => $"{f.Name} = {f.Description}").Concat(followsModel ? Model.WeightMix.All.Select(m => $"{m.Name} = {m.Description}") : [])),
            HelpName = string.Join("|", names),
        };
        if (!followsModel)
            option.DefaultValueFactory = _ => WeightFormat.Fp16.Name;
        option.AcceptOnlyFromAmong(names);
        return option;
    }

    /// <summary>--kv-cache-dtype: what the KV cache stores per value, fp16 (default) or fp32 (<see cref="Kernels.KvCacheType"/>).</summary>
    public static Option<string> KvCacheDType()
    {
        var option = new Option<string>("--kv-cache-dtype")
        {
            Description = "What the KV cache stores per value: fp16 = half the memory and attention traffic (default); " +
                "fp32 = keys and values unrounded, twice the KV memory, for evaluation (with --dtype bf16 on a bf16 model, logprobs within about 2e-4 of a float64 forward pass, 1e-4 with --accumulate fp64)",
            DefaultValueFactory = _ => Kernels.KvCacheType.Fp16.Name(),
            HelpName = string.Join("|", KvCacheTypes.All.Select(t => t.Name())),
        };
        option.AcceptOnlyFromAmong([.. KvCacheTypes.All.Select(t => t.Name())]);
        return option;
    }

    /// <summary>--accumulate: how the matmuls and RMSNorm sum, fp32 (default) or fp64 (<see cref="Engine.Accumulation"/>).</summary>
    public static Option<string> Accumulate()
    {
        var option = new Option<string>("--accumulate")
        {
            Description = "How the matmuls and RMSNorm sum: fp32 (default) or fp64 (float64 sums rounded once to fp32, for evaluation: with --dtype bf16/fp16 in the model's own format and --kv-cache-dtype fp32, log-probabilities within 1e-4 of a float64 forward pass; decode runs the prefill's launches)",
            DefaultValueFactory = _ => Engine.Accumulation.Fp32.Name(),
            HelpName = string.Join("|", Engine.Accumulations.All.Select(a => a.Name())),
        };
        option.AcceptOnlyFromAmong([.. Engine.Accumulations.All.Select(a => a.Name())]);
        return option;
    }

    /// <summary>The <see cref="KvCacheType"/> of a parsed --kv-cache-dtype.</summary>
    public static KvCacheType KvCacheTypeOf(ParseResult p, Option<string> option) => KvCacheTypes.Parse(p.GetValue(option)!) ?? Kernels.KvCacheType.Fp16;

    /// <summary>
    /// The short form of each common flag, llama.cpp's letters where it has one (-m, -p, -n, -f, -s,
    /// -o, -c for perplexity's window). One table for the whole tree, so a letter means the same on
    /// every command that has the flag.
    /// </summary>
    public static IReadOnlyDictionary<string, string> ShortAliases { get; } = new Dictionary<string, string>
    {
        ["--model"] = "-m",
        ["--prompt"] = "-p",
        ["--max-new-tokens"] = "-n",
        ["--file"] = "-f",
        ["--seed"] = "-s",
        ["--out"] = "-o",
        ["--ctx"] = "-c",
    };

    /// <summary>
    /// llama.cpp's spellings of flags that mean the same here, accepted as aliases where the command
    /// has the flag (people type them by habit).
    /// </summary>
    public static IReadOnlyDictionary<string, string> LlamaCppAliases { get; } = new Dictionary<string, string>
    {
        ["--max-new-tokens"] = "--n-predict",
        ["--max-seq-len"] = "--ctx-size",
        ["--temperature"] = "--temp",
    };

    /// <summary>
    /// llama.cpp flags with no equivalent here, and what this engine uses instead: an unknown-flag
    /// error naming one of these says so in its one line.
    /// </summary>
    public static IReadOnlyDictionary<string, string> LlamaCppInstead { get; } = new Dictionary<string, string>
    {
        ["--threads"] = NoThreadCount,
        ["-t"] = NoThreadCount,
        ["-ngl"] = NoPartialOffload,
        ["--n-gpu-layers"] = NoPartialOffload,
        ["--gpu-layers"] = NoPartialOffload,
    };

    const string NoThreadCount = "this engine computes on the GPU (--device cuda) or on ILGPU's CPU accelerator, which uses one thread per core by itself; there is no thread count to set";

    const string NoPartialOffload = "every layer runs on the device chosen with --device (cuda when a GPU is present); there is no partial offload to set";

    /// <summary>
    /// Gives every option of <paramref name="command"/> and its subcommands that is named in
    /// <see cref="ShortAliases"/> its short form, and in <see cref="LlamaCppAliases"/> llama.cpp's
    /// spelling, unless the command already uses that name for something else (a test checks that
    /// none does).
    /// </summary>
    public static void AddShortAliases(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);
        var taken = command.Options.SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet();
        foreach (var option in command.Options)
        {
            if (ShortAliases.TryGetValue(option.Name, out var alias) && !option.Aliases.Contains(alias) && taken.Add(alias))
                option.Aliases.Add(alias);
            if (LlamaCppAliases.TryGetValue(option.Name, out var habit) && !option.Aliases.Contains(habit) && taken.Add(habit))
                option.Aliases.Add(habit);
        }
        foreach (var sub in command.Subcommands)
            AddShortAliases(sub);
    }

    /// <summary>
    /// An integer option whose value is parsed and range-checked in one place, inside the parser: a
    /// value that is not a whole number, overflows, or is out of [<paramref name="min"/>,
    /// <paramref name="max"/>] becomes a parse error (one line, exit 2), never an exception thrown by
    /// a validator reading a value that did not convert.
    /// </summary>
    public static Option<int> Integer(string name, string description, int defaultValue, int min, int max = int.MaxValue)
    {
        var option = new Option<int>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        option.CustomParser = r => r.Tokens.Count == 0 ? defaultValue : ParseInteger(r, name, min, max) ?? defaultValue;
        return option;
    }

    /// <summary>As <see cref="Integer"/>, without a default value (null when the option is absent).</summary>
    public static Option<int?> OptionalInteger(string name, string description, int min, int max = int.MaxValue)
    {
        var option = new Option<int?>(name) { Description = description };
        option.CustomParser = r => r.Tokens.Count == 0 ? null : ParseInteger(r, name, min, max);
        return option;
    }

    /// <summary>
    /// A real-valued option parsed with the invariant culture and no thousands separators (so
    /// <c>1,5</c> is an error, not 15), finite only; the range is the engine's to check.
    /// </summary>
    public static Option<float> Real(string name, string description, float defaultValue, Func<float, bool>? valid = null, string? range = null)
    {
        var option = new Option<float>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        option.CustomParser = r =>
        {
            if (r.Tokens.Count == 0)
                return defaultValue;
            string text = r.Tokens[^1].Value;
            if (float.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out float value) && float.IsFinite(value))
            {
                if (valid is null || valid(value))
                    return value;
                r.AddError($"{name} must be {range}, got {Clip(text)}");
                return defaultValue;
            }
            r.AddError($"{name} '{Clip(text)}' is not a finite decimal number (e.g. 0.7)");
            return defaultValue;
        };
        return option;
    }

    static int? ParseInteger(System.CommandLine.Parsing.ArgumentResult r, string name, int min, int max)
    {
        string text = r.Tokens[^1].Value;
        if (!long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long value))
        {
            bool integral = text.TrimStart('-', '+').Length > 0 && text.TrimStart('-', '+').All(char.IsAsciiDigit);
            r.AddError(integral
                ? $"{name} '{Clip(text)}' is out of range ({RangeText(min, max)})"
                : $"{name} '{Clip(text)}' is not a whole number ({RangeText(min, max)})");
            return null;
        }
        if (value < min || value > max)
        {
            r.AddError($"{name} must be {RangeText(min, max)}, got {Clip(text)}");
            return null;
        }
        return (int)value;
    }

    static string RangeText(int min, int max) => $"between {min} and {max}";

    static string Clip(string text) => text.Length <= 40 ? text : text[..40] + "...";

    /// <summary>--json: machine-readable output on stdout.</summary>
    public static Option<bool> Json() => new("--json") { Description = "Write machine-readable JSON to stdout" };
}
