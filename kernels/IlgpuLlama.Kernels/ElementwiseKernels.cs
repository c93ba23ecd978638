namespace IlgpuLlama.Kernels;

// Small element-wise kernels used by prefill (decode fuses them into the matmuls).
// Decomposition: one thread per element (implicitly grouped).
//   SwiGlu      gate = silu(gate) * up, in place                 grid = tokens * intermediate
//   GatherRows  dst[i, :] = src[rows[i], :]                       grid = count * width
//   MarkSeen    seen[slot, token] = 1 (repetition-penalty state)  grid = tokens
//   AddScalar   values += delta (advances decode positions on the device) grid = count

/// <summary>Element-wise helpers.</summary>
public static class ElementwiseKernels
{
    /// <param name="gate">[n] fp32, overwritten with silu(gate) * up</param>
    /// <param name="up">[n] fp32</param>
    public static void SwiGlu(Index1D index, ArrayView<float> gate, ArrayView<float> up) =>
        gate[index] = DeviceMath.Silu(gate[index]) * up[index];

    /// <param name="src">[*, width] fp32</param>
    /// <param name="rows">[count] source row of each destination row</param>
    /// <param name="dst">[count, width] fp32</param>
    public static void GatherRows(Index1D index, ArrayView<float> src, ArrayView<int> rows, ArrayView<float> dst, int width)
    {
        int i = index / width;
        int d = index - i * width;
        dst[index] = src[rows[i] * width + d];
    }

    /// <param name="tokens">[count] token ids</param>
    /// <param name="slots">[count] sequence slot of each token</param>
    /// <param name="seen">[slots, vocab] flags, 1 once a token appeared in that sequence</param>
    public static void MarkSeen(Index1D index, ArrayView<int> tokens, ArrayView<int> slots, ArrayView<byte> seen, int vocab) =>
        seen[slots[index] * vocab + tokens[index]] = 1;

    /// <param name="values">[count] incremented in place</param>
    public static void AddScalar(Index1D index, ArrayView<int> values, int delta) => values[index] += delta;

    /// <summary>Bytes of <see cref="SwiGlu"/> over n elements: gate and up read, gate written.</summary>
    public static long SwiGluBytesMoved(long n) => 12L * n;

    /// <summary>FLOPs of <see cref="SwiGlu"/>: negate, exp, add, divide, multiply per element.</summary>
    public static long SwiGluFlops(long n) => 5L * n;
}
