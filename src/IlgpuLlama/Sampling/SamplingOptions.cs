using System.Globalization;

namespace IlgpuLlama.Sampling;

/// <summary>
/// How the next token is chosen. Defaults follow Meta's generation_config.json for Llama 3.x
/// Instruct (temperature 0.6, top-p 0.9) together with the top-k of 50 that Hugging Face applies
/// when a generation config does not set one; min-p and repetition penalty are off, as in both.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Softmax temperature; 0 selects greedy decoding.</summary>
    public float Temperature { get; init; } = 0.6f;

    /// <summary>Keep only the k most likely tokens; 0 turns the filter off.</summary>
    public int TopK { get; init; } = 50;

    /// <summary>Keep the smallest most-likely prefix holding at least this probability mass; 1 turns it off.</summary>
    public float TopP { get; init; } = 0.9f;

    /// <summary>Drop tokens less likely than MinP times the most likely one; 0 turns it off.</summary>
    public float MinP { get; init; }

    /// <summary>Hugging Face-style penalty on tokens already in the sequence; 1 turns it off.</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>Seed of the random stream; null draws a fresh seed per run.</summary>
    public ulong? Seed { get; init; }

    /// <summary>True when the choice is the argmax and no random number is drawn.</summary>
    public bool IsGreedy => Temperature == 0f || TopK == 1;

    /// <summary>Greedy decoding with every filter off.</summary>
    public static SamplingOptions Greedy { get; } = new() { Temperature = 0f, TopK = 0, TopP = 1f };

    /// <summary>Throws <see cref="EngineArgumentException"/> naming the first out-of-range option and its valid range.</summary>
    public void Validate()
    {
        if (!float.IsFinite(Temperature) || Temperature < 0f)
            throw Invalid(EngineParameter.Temperature, "must be finite and >= 0 (0 = greedy)", Temperature);
        if (TopK < 0)
            throw Invalid(EngineParameter.TopK, "must be >= 0 (0 = off)", TopK);
        if (!(TopP > 0f && TopP <= 1f))
            throw Invalid(EngineParameter.TopP, "must be in (0, 1] (1 = off)", TopP);
        if (!(MinP >= 0f && MinP < 1f))
            throw Invalid(EngineParameter.MinP, "must be in [0, 1) (0 = off)", MinP);
        if (!float.IsFinite(RepetitionPenalty) || !(RepetitionPenalty > 0f))
            throw Invalid(EngineParameter.RepetitionPenalty, "must be finite and > 0 (1 = off)", RepetitionPenalty);
    }

    private static EngineArgumentException Invalid(EngineParameter parameter, string range, float value) =>
        new($"{{{parameter}}} {range}, got {value.ToString(CultureInfo.InvariantCulture)}.", parameter);

    private static EngineArgumentException Invalid(EngineParameter parameter, string range, int value) =>
        new($"{{{parameter}}} {range}, got {value.ToString(CultureInfo.InvariantCulture)}.", parameter);
}
