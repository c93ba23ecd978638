using System.CommandLine;
using IlgpuLlama.Sampling;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>--temperature, --top-k, --top-p, --min-p, --repetition-penalty, --seed.</summary>
public sealed class SamplingFlags
{
    static readonly SamplingOptions Defaults = new();

    public Option<float> Temperature { get; } = CliOptions.Real("--temperature", "Softmax temperature; 0 = greedy", Defaults.Temperature);
    public Option<int> TopK { get; } = CliOptions.Integer("--top-k", "Keep the k most likely tokens; 0 = off", Defaults.TopK, 0);
    public Option<float> TopP { get; } = CliOptions.Real("--top-p", "Keep the smallest set with this probability mass; 1 = off", Defaults.TopP);
    public Option<float> MinP { get; } = CliOptions.Real("--min-p", "Drop tokens below min-p x the top probability; 0 = off", Defaults.MinP);
    public Option<float> RepetitionPenalty { get; } = CliOptions.Real("--repetition-penalty", "Penalty for tokens already in the sequence; 1 = off", Defaults.RepetitionPenalty);
    public Option<ulong?> Seed { get; } = new("--seed") { Description = "Random seed (same seed, same output); default: random, printed to stderr" };

    /// <summary>Adds the flags to a command.</summary>
    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Temperature, TopK, TopP, MinP, RepetitionPenalty, Seed })
            command.Options.Add(o);
    }

    /// <summary>Validated sampling options (a clear one-line error for out-of-range values).</summary>
    public SamplingOptions Parse(ParseResult p)
    {
        var options = new SamplingOptions
        {
            Temperature = p.GetValue(Temperature),
            TopK = p.GetValue(TopK),
            TopP = p.GetValue(TopP),
            MinP = p.GetValue(MinP),
            RepetitionPenalty = p.GetValue(RepetitionPenalty),
            Seed = p.GetValue(Seed) ?? (ulong)Random.Shared.NextInt64(1, long.MaxValue),
        };
        options.Validate();
        return options;
    }
}
