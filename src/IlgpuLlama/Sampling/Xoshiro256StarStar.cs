namespace IlgpuLlama.Sampling;

/// <summary>
/// xoshiro256** seeded through SplitMix64. Implemented here rather than using System.Random so that
/// a seed gives the same tokens on every .NET version and platform.
/// </summary>
public sealed class Xoshiro256StarStar
{
    private ulong _s0, _s1, _s2, _s3;

    /// <summary>Creates the generator for stream <paramref name="stream"/> of <paramref name="seed"/>.</summary>
    /// <remarks>
    /// Streams are separated by hashing the stream index into the SplitMix64 start state, so
    /// sequence 3 of a batch does not replay a shifted copy of sequence 2's numbers.
    /// </remarks>
    public Xoshiro256StarStar(ulong seed, ulong stream = 0)
    {
        ulong state = SplitMix64Mix(seed) ^ SplitMix64Mix(stream + 0x632BE59BD9B4E019UL);
        _s0 = SplitMix64Next(ref state);
        _s1 = SplitMix64Next(ref state);
        _s2 = SplitMix64Next(ref state);
        _s3 = SplitMix64Next(ref state);
        // The all-zero state is a fixed point; SplitMix64 practically never yields it, but be sure.
        if ((_s0 | _s1 | _s2 | _s3) == 0) _s0 = 0x9E3779B97F4A7C15UL;
    }

    /// <summary>Next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong result = RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform double in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    private static ulong RotateLeft(ulong x, int k) => (x << k) | (x >> (64 - k));

    private static ulong SplitMix64Next(ref ulong state)
    {
        state += 0x9E3779B97F4A7C15UL;
        return SplitMix64Mix(state);
    }

    private static ulong SplitMix64Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
