using System.Security.Cryptography;

namespace IlgpuLlama.Sampling;

/// <summary>Outcome of one sampling step.</summary>
/// <param name="TokenId">The chosen token, or -1 when <paramref name="NeedsFullLogits"/> is set.</param>
/// <param name="NeedsFullLogits">
/// The candidates could not decide the token; call <see cref="TokenSampler.SampleFull"/> with the
/// whole logit row. The step's random number is not used up: the next draw gets it.
/// </param>
/// <param name="KeptCount">How many most-likely tokens survived top-k, top-p and min-p (1 when greedy).</param>
public readonly record struct SampleResult(int TokenId, bool NeedsFullLogits, int KeptCount)
{
    internal static SampleResult NeedMoreCandidates => new(-1, true, 0);
}

/// <summary>
/// Chooses the next token of one sequence on the host from the device's top candidates.
/// </summary>
/// <remarks>
/// <para>Probabilities are exact full-vocabulary probabilities, p_i = exp((l_i - lmax) / T) / Z, with Z
/// summed over the whole vocabulary on the device. Over tokens sorted by logit (descending, ties by
/// lower id) the kept set is the shortest of: the first TopK tokens; the shortest prefix whose
/// cumulative probability reaches TopP; the prefix with p_i &gt;= MinP * p_max. Note that TopP is
/// measured in full-vocabulary mass, not in mass renormalised after top-k as Hugging Face does; the two
/// agree whenever top-k is off or keeps at least TopP of the mass. The kept probabilities are
/// renormalised and exactly one uniform number is drawn per non-greedy step, whichever path decides,
/// so <see cref="Sample"/> and <see cref="SampleFull"/> pick the same token from the same draw.</para>
/// <para>With every filter off the kept set is the whole vocabulary and its mass is exactly 1 by
/// definition of Z, so the candidates decide whenever the draw lands inside their mass; otherwise
/// the draw is kept for <see cref="SampleFull"/>. This keeps plain temperature sampling off the slow
/// path almost always.</para>
/// <para>Logits passed in must already carry the repetition penalty.</para>
/// </remarks>
public sealed class TokenSampler
{
    private readonly Xoshiro256StarStar _random;
    // A draw made by Sample that could not be resolved from the candidates; the next draw reuses it so
    // that asking for the full row does not advance the random stream.
    private double? _pendingDraw;

    /// <param name="options">Validated here.</param>
    /// <param name="sequenceIndex">Selects this sequence's random stream, so batch members differ but each is reproducible.</param>
    public TokenSampler(SamplingOptions options, int sequenceIndex = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegative(sequenceIndex);
        options.Validate();
        Options = options;
        Seed = options.Seed ?? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(sizeof(ulong)));
        _random = new Xoshiro256StarStar(Seed, (ulong)sequenceIndex);
    }

    public SamplingOptions Options { get; }

    /// <summary>The seed in use (drawn at random when the options had none), for reproducing a run.</summary>
    public ulong Seed { get; }

    /// <summary>Samples from the device's top candidates.</summary>
    /// <param name="candidateLogits">The C largest logits, sorted descending (ties by ascending id).</param>
    /// <param name="candidateIds">The token id of each candidate logit.</param>
    /// <param name="maxLogit">lmax, the largest logit of the whole row (equal to the first candidate).</param>
    /// <param name="normalizer">Z = sum over the vocabulary of exp((l_v - lmax) / T); ignored when greedy.</param>
    /// <param name="vocabSize">Length of the full logit row.</param>
    public SampleResult Sample(ReadOnlySpan<float> candidateLogits, ReadOnlySpan<int> candidateIds, float maxLogit, double normalizer, int vocabSize)
    {
        if (candidateLogits.IsEmpty) throw new ArgumentException("At least one candidate is needed.", nameof(candidateLogits));
        if (candidateIds.Length != candidateLogits.Length)
            throw new ArgumentException($"{candidateIds.Length} candidate ids for {candidateLogits.Length} logits.", nameof(candidateIds));
        if (vocabSize < candidateLogits.Length)
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "The vocabulary is smaller than the candidate list.");

        if (Options.IsGreedy) return new SampleResult(candidateIds[0], false, 1);

        if (!double.IsFinite(normalizer) || normalizer <= 0)
            throw new ArgumentOutOfRangeException(nameof(normalizer), normalizer, "The softmax normaliser must be finite and positive.");

        int kept = KeptCount(candidateLogits, maxLogit, normalizer, vocabSize, out double keptMass);
        if (FiltersOff(vocabSize)) keptMass = 1.0;
        if (kept > 0)
        {
            int index = Draw(candidateLogits, maxLogit, normalizer, kept, keptMass, NextDraw());
            return new SampleResult(candidateIds[index], false, kept);
        }

        if (FiltersOff(vocabSize))
        {
            double u = NextDraw();
            int index = Draw(candidateLogits, maxLogit, normalizer, candidateLogits.Length, 1.0, u, beyondKnown: true);
            if (index >= 0) return new SampleResult(candidateIds[index], false, vocabSize);
            _pendingDraw = u;
        }
        return SampleResult.NeedMoreCandidates;
    }

    /// <summary>
    /// Samples from the whole logit row (after <see cref="Sample"/> asked for it, or when no device
    /// candidates exist), applying the same rules and consuming the same single draw.
    /// </summary>
    public SampleResult SampleFull(ReadOnlySpan<float> allLogits)
    {
        if (allLogits.IsEmpty) throw new ArgumentException("The logit row is empty.", nameof(allLogits));
        double normalizer = ComputeNormalizer(allLogits, Options.IsGreedy ? 1f : Options.Temperature, out float maxLogit);
        if (double.IsNaN(normalizer)) throw new ArgumentException("The logit row contains NaN.", nameof(allLogits));

        if (Options.IsGreedy) return new SampleResult(allLogits.IndexOf(maxLogit), false, 1);

        int[] order = new int[allLogits.Length];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        float[] logits = allLogits.ToArray();
        Array.Sort(order, (a, b) => logits[a] != logits[b] ? logits[b].CompareTo(logits[a]) : a.CompareTo(b));
        float[] sorted = new float[order.Length];
        for (int i = 0; i < order.Length; i++) sorted[i] = logits[order[i]];

        int kept = KeptCount(sorted, maxLogit, normalizer, sorted.Length, out double keptMass);
        // With no filter the kept mass is the whole vocabulary's, exactly 1 by definition of Z; both
        // paths use that constant rather than a rounded sum, so they agree.
        if (FiltersOff(sorted.Length)) keptMass = 1.0;
        int index = Draw(sorted, maxLogit, normalizer, kept, keptMass, NextDraw());
        return new SampleResult(order[index], false, kept);
    }

    /// <summary>
    /// Z = sum of exp((l - lmax) / T) over the row, in double and in index order, so tests and the
    /// host fallback agree bit for bit.
    /// </summary>
    public static double ComputeNormalizer(ReadOnlySpan<float> logits, float temperature, out float maxLogit)
    {
        if (logits.IsEmpty) throw new ArgumentException("The logit row is empty.", nameof(logits));
        if (!(temperature > 0f)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "Temperature must be > 0.");
        maxLogit = float.NegativeInfinity;
        foreach (float l in logits)
        {
            if (float.IsNaN(l)) return double.NaN;
            if (l > maxLogit) maxLogit = l;
        }
        double inverseT = 1.0 / temperature;
        double sum = 0;
        foreach (float l in logits) sum += Math.Exp(((double)l - maxLogit) * inverseT);
        return sum;
    }

    /// <summary>
    /// Reference repetition penalty with Hugging Face semantics: each distinct seen token once,
    /// positive logits divided by the penalty, others multiplied, so the token always becomes less likely.
    /// </summary>
    public static void ApplyRepetitionPenalty(Span<float> logits, IEnumerable<int> seenTokens, float penalty)
    {
        ArgumentNullException.ThrowIfNull(seenTokens);
        if (!float.IsFinite(penalty) || !(penalty > 0f))
            throw new ArgumentOutOfRangeException(nameof(penalty), penalty, "The repetition penalty must be finite and > 0.");
        if (penalty == 1f) return;
        var distinct = new HashSet<int>(seenTokens);
        foreach (int id in distinct)
        {
            if ((uint)id >= (uint)logits.Length)
                throw new ArgumentOutOfRangeException(nameof(seenTokens), id, $"Seen token {id} is outside the logit row of {logits.Length}.");
            float l = logits[id];
            logits[id] = l > 0f ? l / penalty : l * penalty;
        }
    }

    /// <summary>
    /// Length of the kept prefix, or 0 when the known <paramref name="sorted"/> prefix of the
    /// vocabulary cannot determine it. <paramref name="keptMass"/> is the kept probability mass.
    /// </summary>
    private int KeptCount(ReadOnlySpan<float> sorted, float maxLogit, double normalizer, int vocabSize, out double keptMass)
    {
        SamplingOptions o = Options;
        double inverseT = 1.0 / o.Temperature;
        int topK = o.TopK > 0 ? Math.Min(o.TopK, vocabSize) : vocabSize;
        int scan = Math.Min(topK, sorted.Length);
        double minPThreshold = o.MinP * Probability(sorted[0], maxLogit, inverseT, normalizer);

        double cumulative = 0;
        for (int i = 0; i < scan; i++)
        {
            double p = Probability(sorted[i], maxLogit, inverseT, normalizer);
            // i > 0: the most likely token always survives min-p, even if rounding says otherwise.
            if (o.MinP > 0f && i > 0 && p < minPThreshold)
            {
                keptMass = cumulative;
                return i;
            }
            cumulative += p;
            if (o.TopP < 1f && cumulative >= o.TopP)
            {
                keptMass = cumulative;
                return i + 1;
            }
        }

        keptMass = cumulative;
        // Neither filter cut inside the known tokens: only a top-k boundary inside them decides.
        return topK <= sorted.Length ? scan : 0;
    }

    private bool FiltersOff(int vocabSize) =>
        (Options.TopK == 0 || Options.TopK >= vocabSize) && Options.TopP >= 1f && Options.MinP == 0f;

    private double NextDraw()
    {
        if (_pendingDraw is double pending)
        {
            _pendingDraw = null;
            return pending;
        }
        return _random.NextDouble();
    }

    /// <summary>
    /// Index of the token the draw <paramref name="u"/> selects among the first <paramref name="kept"/>
    /// sorted tokens. With <paramref name="beyondKnown"/> the kept set continues past the known tokens
    /// and -1 means the draw fell beyond them.
    /// </summary>
    private int Draw(ReadOnlySpan<float> sorted, float maxLogit, double normalizer, int kept, double keptMass, double u, bool beyondKnown = false)
    {
        double inverseT = 1.0 / Options.Temperature;
        double target = u * keptMass;
        double cumulative = 0;
        for (int i = 0; i < kept; i++)
        {
            cumulative += Probability(sorted[i], maxLogit, inverseT, normalizer);
            if (target < cumulative) return i;
        }
        // Without beyondKnown, only reachable through rounding when target lands on the very top of the kept mass.
        return beyondKnown ? -1 : kept - 1;
    }

    private static double Probability(float logit, float maxLogit, double inverseT, double normalizer) =>
        Math.Exp(((double)logit - maxLogit) * inverseT) / normalizer;
}
