using System.Diagnostics;

namespace IlgpuLlama.Engine;

/// <summary>
/// One scoring window of a perplexity run: tokens [<paramref name="Start"/>, <paramref name="Start"/> +
/// <paramref name="Length"/>) of the text, the first replaced by BOS, and the predictions scored:
/// the logits at positions <paramref name="FirstScored"/>..<paramref name="Length"/>-2 of the window
/// predict window tokens <paramref name="FirstScored"/>+1..<paramref name="Length"/>-1.
/// </summary>
public readonly record struct PerplexityWindow(int Start, int Length, int FirstScored)
{
    /// <summary>Tokens scored in this window.</summary>
    public int Scored => Length - 1 - FirstScored;
}

/// <summary>Where a perplexity run is: windows and tokens done so far, and the time it took.</summary>
public readonly record struct PerplexityProgress(int WindowsDone, int Windows, long TokensDone, long Tokens, TimeSpan Elapsed)
{
    /// <summary>Tokens run through the model per second so far.</summary>
    public double TokensPerSecond => Elapsed.TotalSeconds > 0 ? TokensDone / Elapsed.TotalSeconds : 0;
}

/// <summary>The outcome of a perplexity run.</summary>
/// <param name="Perplexity">exp(<paramref name="NllMean"/>)</param>
/// <param name="NllMean">mean negative log-likelihood (natural log) of the scored tokens</param>
/// <param name="PerplexityUncertainty">standard error of <paramref name="Perplexity"/> (llama-perplexity's "+/-")</param>
/// <param name="TokensScored">predictions scored</param>
/// <param name="Context">window length in tokens</param>
/// <param name="Windows">windows run</param>
/// <param name="TextTokens">tokens of the text (with BOS)</param>
/// <param name="TokensEvaluated">tokens run through the model (every window's whole length)</param>
/// <param name="Seconds">wall time of the forward passes and scoring</param>
public sealed record PerplexityResult(double Perplexity, double NllMean, double PerplexityUncertainty, int TokensScored, int Context, int Windows,
    int TextTokens, long TokensEvaluated, double Seconds)
{
    /// <summary>Tokens run through the model per second.</summary>
    public double TokensPerSecond => Seconds > 0 ? TokensEvaluated / Seconds : 0;
}

/// <summary>
/// Perplexity as llama-perplexity computes it: the text's tokens (BOS first) are cut into windows
/// of <c>context</c> tokens; each window's first token is replaced by BOS and only the predictions
/// in its second half are scored, so every scored token sees at least half a window of context
/// (a token the text ends with that does not fill a window is not scored). A text that fits one
/// window is one window scoring every token after BOS. Windows run together, one per KV-cache
/// slot, through <see cref="LlamaModel.PrefillLogits"/>; the log-softmax of each scored row is
/// taken on the host in float64.
/// </summary>
public static class Perplexity
{
    /// <summary>The windows of a text of <paramref name="tokenCount"/> tokens at window length <paramref name="context"/>.</summary>
    public static IReadOnlyList<PerplexityWindow> Windows(int tokenCount, int context)
    {
        if (context < 2)
            throw new EngineArgumentException($"{EngineParameters.Context} {context} must be at least 2 tokens", EngineParameter.Context);
        if (tokenCount < 2)
            throw new EngineArgumentException($"the text has {tokenCount} token(s); perplexity needs at least 2 (BOS and one token to predict)");
        if (tokenCount <= context)
            return [new PerplexityWindow(0, tokenCount, 0)];
        int windows = tokenCount / context;
        return Enumerable.Range(0, windows).Select(i => new PerplexityWindow(i * context, context, context / 2)).ToArray();
    }

    /// <summary>
    /// Scores <paramref name="tokens"/> (the text with BOS first) with windows of <paramref name="context"/>
    /// tokens, <see cref="LlamaModel.MaxBatch"/> windows per pass. <paramref name="bos"/> replaces each
    /// window's first token (null: windows start with the text's own token there).
    /// </summary>
    public static PerplexityResult Score(LlamaModel model, IReadOnlyList<int> tokens, int context, int? bos,
        IProgress<PerplexityProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokens);
        var windows = Windows(tokens.Count, context);
        if (windows[0].Length > model.MaxSeq)
            throw new EngineArgumentException(
                $"{EngineParameters.Context} {windows[0].Length} exceeds the KV cache's {model.MaxSeq} positions; lower {EngineParameters.Context} or raise {EngineParameters.MaxSeqLen}",
                EngineParameter.Context);
        long totalTokens = windows.Sum(w => (long)w.Length);
        int vocab = model.Config.VocabSize;
        double nllSum = 0, nllSquares = 0;
        int scored = 0;
        long done = 0;
        var sw = Stopwatch.StartNew();
        // A bar at once, then one step per piece of every window (not one per pass of up to max-batch
        // windows, which on the CPU accelerator is minutes): the windows of a pass are prefilled
        // together, PiecePositions positions at a time, each piece continuing its window in the cache.
        progress?.Report(new PerplexityProgress(0, windows.Count, 0, totalTokens, sw.Elapsed));
        for (int first = 0; first < windows.Count; first += model.MaxBatch)
        {
            var batch = windows.Skip(first).Take(model.MaxBatch).ToArray();
            var ids = batch.Select(w =>
            {
                var window = new int[w.Length];
                for (int i = 0; i < w.Length; i++)
                    window[i] = tokens[w.Start + i];
                if (bos is int b)
                    window[0] = b;
                return window;
            }).ToArray();
            int longest = batch.Max(w => w.Length);
            for (int start = 0; start < longest; start += PiecePositions)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var live = Enumerable.Range(0, batch.Length).Where(i => batch[i].Length > start).ToArray();
                var inputs = live.Select(i => new SequenceInput(i, start, ids[i][start..Math.Min(start + PiecePositions, batch[i].Length)])).ToArray();
                model.PrefillLogits(inputs, (seq, pos, row) =>
                {
                    int wi = live[seq];
                    var w = batch[wi];
                    if (pos < w.FirstScored || pos >= w.Length - 1)
                        return;
                    double nll = NegativeLogLikelihood(row[..vocab], ids[wi][pos + 1]);
                    nllSum += nll;
                    nllSquares += nll * nll;
                    scored++;
                });
                done += inputs.Sum(x => (long)x.Tokens.Count);
                bool passDone = start + PiecePositions >= longest;
                progress?.Report(new PerplexityProgress(passDone ? Math.Min(first + batch.Length, windows.Count) : first, windows.Count, done, totalTokens, sw.Elapsed));
            }
        }
        double mean = nllSum / scored;
        double ppl = Math.Exp(mean);
        // Standard error of the mean NLL, carried through exp (as llama-perplexity reports it).
        double variance = Math.Max(0, nllSquares / scored - mean * mean);
        double uncertainty = scored > 1 ? ppl * Math.Sqrt(variance / (scored - 1)) : double.NaN;
        return new PerplexityResult(ppl, mean, uncertainty, scored, context, windows.Count, tokens.Count, totalTokens, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Positions of each window prefilled per call, so progress advances every piece.</summary>
    public const int PiecePositions = 128;

    /// <summary>-log softmax(<paramref name="logits"/>)[<paramref name="target"/>], in float64.</summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, int target)
    {
        double max = double.NegativeInfinity;
        foreach (float l in logits)
            max = Math.Max(max, l);
        if (double.IsNaN(max) || double.IsInfinity(max))
            throw new EngineStateException(
                $"the logits contain NaN or infinity; the weights or activations overflowed (try {EngineParameters.WeightFormat} bf16)", EngineParameter.WeightFormat);
        double sum = 0;
        foreach (float l in logits)
            sum += Math.Exp(l - max);
        return max + Math.Log(sum) - logits[target];
    }
}
