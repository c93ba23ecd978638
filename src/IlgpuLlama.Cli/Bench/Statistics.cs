namespace IlgpuLlama.Cli.Bench;

/// <summary>Summary statistics of repeated measurements, shared by every benchmark.</summary>
public static class Statistics
{
    /// <summary>The median of a non-empty list (the mean of the two middle values for an even count).</summary>
    public static double Median(IReadOnlyList<double> values)
    {
        if (values.Count == 0)
            throw new ArgumentException("the median of no values is undefined", nameof(values));
        var s = values.OrderBy(v => v).ToArray();
        int n = s.Length;
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }

    /// <summary>The arithmetic mean of a non-empty list.</summary>
    public static double Mean(IReadOnlyList<double> values) =>
        values.Count > 0 ? values.Average() : throw new ArgumentException("the mean of no values is undefined", nameof(values));

    /// <summary>The sample standard deviation (n - 1 in the denominator); 0 for a single value.</summary>
    public static double StdDev(IReadOnlyList<double> values)
    {
        if (values.Count < 2)
            return 0;
        double mean = Mean(values);
        return Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
    }
}
