namespace IlgpuLlama.Tests;

/// <summary>The tests' own float64 arithmetic on logits, independent of the engine's (the oracle its results are held to).</summary>
internal static class Float64Oracle
{
    /// <summary>float64 log-softmax of a logits row (max-shifted log-sum-exp).</summary>
    public static double[] LogSoftmax(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (float l in logits)
            max = Math.Max(max, l);
        double sum = 0;
        foreach (float l in logits)
            sum += Math.Exp(l - max);
        var r = new double[logits.Length];
        for (int i = 0; i < r.Length; i++)
            r[i] = logits[i] - max - Math.Log(sum);
        return r;
    }
}
