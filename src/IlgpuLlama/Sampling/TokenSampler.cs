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
/// summed over the whole vocabulary on the device. The filters are Hugging Face transformers' warpers
/// in its order: temperature, top-k, top-p, min-p, each applied to the distribution the one before
/// left, renormalised. Over tokens sorted by logit (descending, ties by lower id) the kept set is the
/// shortest of: the top-k tokens (with ties at the k-th logit); the shortest prefix whose mass,
/// renormalised over the top-k set, reaches TopP; the prefix with p_i &gt;= MinP * p_max. The kept probabilities are
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
    /// vocabulary cannot determine it. <paramref name="keptMass"/> is the kept full-vocabulary mass.
    /// </summary>
    /// <remarks>
    /// Transformers' warpers in their order, each on the distribution the previous one left,
    /// renormalised: top-k keeps every token whose logit is at least the k-th largest (ties at the
    /// boundary stay, as <c>scores &lt; topk(scores)[..., -1]</c> removes only smaller ones); top-p keeps
    /// the shortest prefix whose mass, renormalised over the top-k set, reaches TopP; min-p keeps the
    /// tokens with p &gt;= MinP x p_max, a ratio that renormalising does not change. All three are prefixes
    /// of the sorted order, so the kept set is the shortest of them.
    /// </remarks>
    private int KeptCount(ReadOnlySpan<float> sorted, float maxLogit, double normalizer, int vocabSize, out double keptMass)
    {
        SamplingOptions o = Options;
        double inverseT = 1.0 / o.Temperature;
        int known = sorted.Length;
        var p = new double[known];
        for (int i = 0; i < known; i++) p[i] = Probability(sorted[i], maxLogit, inverseT, normalizer);

        // Top-k: its size K (with boundary ties) and mass; null where the known tokens cannot tell.
        int? k;
        double massK;
        if (o.TopK == 0 || o.TopK >= vocabSize)
        {
            k = vocabSize;
            massK = 1.0; // the whole vocabulary: exactly 1 by definition of Z
        }
        else if (o.TopK <= known)
        {
            int end = o.TopK;
            while (end < known && sorted[end] == sorted[o.TopK - 1]) end++;
            k = end < known || known == vocabSize ? end : null;
            massK = Sum(p, end);
        }
        else
        {
            k = null;
            massK = double.NaN;
        }

        // Top-p on the top-k distribution: the shortest prefix with mass >= TopP x massK. pLower is a
        // lower bound on its length when it is not determined.
        int? topP;
        int pLower;
        if (o.TopP >= 1f)
        {
            topP = k;
            pLower = k ?? known;
        }
        else if (k is int kk)
        {
            topP = PrefixReaching(p, o.TopP * massK, Math.Min(kk, known)) ?? (kk <= known ? kk : null);
            pLower = topP ?? known;
        }
        else
        {
            // K lies beyond the known tokens, so massK is between their mass and 1: the cut is known
            // only where both bounds put it at the same place.
            int? low = PrefixReaching(p, o.TopP * Sum(p, known), known);
            int? high = PrefixReaching(p, o.TopP * 1.0, known);
            topP = low is not null && low == high ? low : null;
            pLower = low ?? known;
        }

        // Min-p: the first token below MinP x p_max ends the kept set (the top token always stays).
        int? minP = null;
        if (o.MinP > 0f)
        {
            double threshold = o.MinP * p[0];
            for (int i = 1; i < known; i++)
            {
                if (p[i] < threshold)
                {
                    minP = i;
                    break;
                }
            }
        }

        int kept = minP is int m && m <= pLower ? m
            : topP is int t ? Math.Min(t, minP ?? int.MaxValue)
            : 0;
        if (kept > known)
            kept = 0;
        keptMass = Sum(p, kept);
        return kept;
    }

    /// <summary>The smallest n &lt;= <paramref name="limit"/> whose first n probabilities sum to at least <paramref name="target"/>, or null.</summary>
    private static int? PrefixReaching(double[] p, double target, int limit)
    {
        double cumulative = 0;
        for (int i = 0; i < limit; i++)
        {
            cumulative += p[i];
            if (cumulative >= target) return i + 1;
        }
        return null;
    }

    private static double Sum(double[] p, int count)
    {
        double sum = 0;
        for (int i = 0; i < count; i++) sum += p[i];
        return sum;
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
