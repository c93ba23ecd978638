using System.Runtime.InteropServices;

namespace IlgpuLlama.Kernels;

/// <summary>
/// Sixteen bytes: eight 16-bit weights, or four fp32 values reinterpreted. Loading a view of
/// these gives <c>ld.global.v4.b32</c> in PTX and <c>LDG.E.128</c> in sm_60 SASS.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
public struct U4
{
    public uint X, Y, Z, W;
}

/// <summary>Four fp32 values loaded with one 128-bit access.</summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
public struct F4
{
    public float X, Y, Z, W;
}

/// <summary>Small device-side helpers shared by the kernel families.</summary>
public static class DeviceMath
{
    /// <summary>Sum over the warp; every lane receives the total.</summary>
    public static float WarpSum(float value)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
            value += Warp.ShuffleXor(value, offset);
        return value;
    }

    /// <summary>Max over the warp; every lane receives the result.</summary>
    public static float WarpMax(float value)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
            value = XMath.Max(value, Warp.ShuffleXor(value, offset));
        return value;
    }

    /// <summary>
    /// Rounds an fp32 value to binary16 bits, round to nearest even, in integer arithmetic. Done in
    /// software rather than with a Half cast because ILGPU's CPU accelerator truncates in that
    /// cast while CUDA rounds; this way both back ends write bit-identical KV caches. It runs only
    /// for the K/V values appended each step, so its cost does not matter.
    /// </summary>
    public static ushort ToHalfBits(float value)
    {
        uint f = Interop.FloatAsInt(value);
        uint sign = (f >> 16) & 0x8000u;
        uint abs = f & 0x7FFFFFFFu;
        if (abs >= 0x7F800000u)
            return (ushort)(sign | 0x7C00u | (abs > 0x7F800000u ? 0x0200u : 0u)); // inf, NaN
        if (abs >= 0x477FF000u)
            return (ushort)(sign | 0x7C00u); // rounds past 65504: overflow to inf
        if (abs < 0x38800000u)
        {
            // Below the smallest normal half: adding 0.5 puts the value's bits at the half's
            // subnormal scale (ulp of 0.5 in fp32 is 2^-24), and the fp32 add rounds to nearest even.
            float shifted = Interop.IntAsFloat(abs) + 0.5f;
            return (ushort)(sign | (Interop.FloatAsInt(shifted) - 0x3F000000u));
        }
        uint odd = (abs >> 13) & 1u;
        abs += 0xC8000FFFu + odd; // rebias exponent 127 -> 15, add rounding bias (ties to even)
        return (ushort)(sign | (abs >> 13));
    }

    /// <summary>
    /// fp32 to fp16 bits for the KV cache: as <see cref="ToHalfBits"/>, except that a finite value
    /// beyond the fp16 range saturates to +-65504 instead of becoming +-inf. An infinite key gives
    /// a score of inf - inf = NaN in attention's softmax, and an infinite value NaN in its weighted
    /// sum; a saturated one is only large. NaN and infinite inputs pass through unchanged (they
    /// are already wrong upstream, and hiding them would hide that).
    /// </summary>
    public static ushort ToKvHalfBits(float value)
    {
        uint f = Interop.FloatAsInt(value);
        uint abs = f & 0x7FFFFFFFu;
        if (abs >= 0x477FF000u && abs < 0x7F800000u)
            return (ushort)(((f >> 16) & 0x8000u) | 0x7BFFu); // finite, rounds past 65504
        return ToHalfBits(value);
    }

    /// <summary>SiLU in fp32: x * sigmoid(x).</summary>
    public static float Silu(float x) => x / (1.0f + XMath.Exp(-x));
}
