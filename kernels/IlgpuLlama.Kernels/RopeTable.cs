namespace IlgpuLlama.Kernels;

/// <summary>
/// Host-side rotary table: for each position p and frequency i, (cos, sin) of p * inv_freq[i],
/// computed in float64 and stored as fp32 [max_seq, head_dim/2, 2]. Computing the angle in
/// float64 keeps large positions exact (an fp32 product loses ~1e-2 rad at position 131072).
/// </summary>
public static class RopeTable
{
    /// <summary>Builds the table from inverse frequencies (head_dim/2 of them).</summary>
    public static float[] Build(IReadOnlyList<double> inverseFrequencies, int maxSeq)
    {
        int half = inverseFrequencies.Count;
        var table = new float[(long)maxSeq * half * 2];
        for (int p = 0; p < maxSeq; p++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = p * inverseFrequencies[i];
                long o = ((long)p * half + i) * 2;
                table[o] = (float)Math.Cos(angle);
                table[o + 1] = (float)Math.Sin(angle);
            }
        }
        return table;
    }

    /// <summary>A table of plain (unscaled) RoPE frequencies 1 / theta^(2i / head_dim), for benchmarks.</summary>
    public static float[] Plain(int headDim, int maxSeq, double theta = 500000.0)
    {
        var inv = new double[headDim / 2];
        for (int i = 0; i < inv.Length; i++)
            inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
        return Build(inv, maxSeq);
    }

    /// <summary>Bytes of the table for a model: max_seq * head_dim/2 * 2 * 4.</summary>
    public static long Bytes(int maxSeq, int headDim) => (long)maxSeq * headDim * 4;
}
