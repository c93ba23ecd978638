namespace IlgpuLlama.Kernels;

/// <summary>
/// Device helpers the K-quant formats share (Q4_K, Q5_K, Q6_K in this folder): reading their side
/// words and turning four 4-bit quants (with their high bits) into four dequantised weights. Every
/// member is a pure function of its arguments, inlined by ILGPU.
/// </summary>
public static class KQuantDevice
{
    /// <summary>An fp16 side word as fp32.</summary>
    public static float Half(ushort bits) => Interop.IntAsFloat(bits);

    /// <summary>Side words <paramref name="i"/> and i + 1 as one 32-bit word (four bytes of ggml's block, little-endian).</summary>
    public static uint Pair(ArrayView<ushort> side, int i) => side[i] | ((uint)side[i + 1] << 16);

    /// <summary>Byte <paramref name="i"/> of the side words from word <paramref name="first"/> on.</summary>
    public static int Byte(ArrayView<ushort> side, int first, int i) => (side[first + (i >> 1)] >> ((i & 1) * 8)) & 0xFF;

    /// <summary>
    /// The 6-bit scale and min of sub-block <paramref name="j"/> (0..7) from the 12 packed bytes at side
    /// word <paramref name="first"/> (ggml's get_scale_min_k4).
    /// </summary>
    public static void ScaleMin(ArrayView<ushort> side, int first, int j, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = Byte(side, first, j) & 63;
            min = Byte(side, first, j + 4) & 63;
        }
        else
        {
            int hi = Byte(side, first, j + 4);
            scale = (hi & 0xF) | ((Byte(side, first, j - 4) >> 6) << 4);
            min = (hi >> 4) | ((Byte(side, first, j) >> 6) << 4);
        }
    }

    /// <summary>
    /// Q4_K and Q5_K: the multipliers of sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles) of the
    /// super-block whose side words start at <paramref name="b"/>: weight = s * q - o (ggml: d1 = d * sc, m1 = min * m).
    /// </summary>
    public static void PairScales(ArrayView<ushort> side, int b, int j, out float sLo, out float oLo, out float sHi, out float oHi)
    {
        float d = Half(side[b]);
        float dmin = Half(side[b + 1]);
        ScaleMin(side, b + 2, 2 * j, out int scLo, out int mLo);
        ScaleMin(side, b + 2, 2 * j + 1, out int scHi, out int mHi);
        sLo = d * scLo;
        oLo = dmin * mLo;
        sHi = d * scHi;
        oHi = dmin * mHi;
    }

    /// <summary>
    /// Four weights from the four bytes of <paramref name="word"/>: each byte's nibble at
    /// <paramref name="shift"/> (0 or 4), with bits from <paramref name="high"/>'s matching byte at
    /// <paramref name="highShift"/> (masked by <paramref name="highMask"/>: 0 for Q4_K, 1 for Q5_K, 3 for
    /// Q6_K) above it, less <paramref name="bias"/> (32 for Q6_K), times <paramref name="s"/> less <paramref name="o"/>.
    /// </summary>
    public static F4 Quad(uint word, int shift, uint high, int highShift, uint highMask, int bias, float s, float o)
    {
        F4 r;
        r.X = (int)(((word >> shift) & 0xFu) | (((high >> highShift) & highMask) << 4)) - bias;
        r.Y = (int)(((word >> (8 + shift)) & 0xFu) | (((high >> (8 + highShift)) & highMask) << 4)) - bias;
        r.Z = (int)(((word >> (16 + shift)) & 0xFu) | (((high >> (16 + highShift)) & highMask) << 4)) - bias;
        r.W = (int)(((word >> (24 + shift)) & 0xFu) | (((high >> (24 + highShift)) & highMask) << 4)) - bias;
        r.X = s * r.X - o;
        r.Y = s * r.Y - o;
        r.Z = s * r.Z - o;
        r.W = s * r.W - o;
        return r;
    }

    /// <summary>Eight weights from two words (bytes 0..7 of a 16-weight run), as <see cref="Quad"/>.</summary>
    public static W8 Eight(uint a, uint b, int shift, uint highA, uint highB, int highShift, uint highMask, int bias, float s, float o)
    {
        F4 x = Quad(a, shift, highA, highShift, highMask, bias, s, o);
        F4 y = Quad(b, shift, highB, highShift, highMask, bias, s, o);
        W8 r;
        r.V0 = x.X;
        r.V1 = x.Y;
        r.V2 = x.Z;
        r.V3 = x.W;
        r.V4 = y.X;
        r.V5 = y.Y;
        r.V6 = y.Z;
        r.V7 = y.W;
        return r;
    }

    /// <summary>Word <paramref name="i"/> (0..3) of a 128-bit chunk.</summary>
    public static uint Word(U4 v, int i) => i == 0 ? v.X : i == 1 ? v.Y : i == 2 ? v.Z : v.W;
}
