using System.Text;

namespace IlgpuLlama.Kernels.Reference;

/// <summary>
/// Outcome of comparing a kernel's output with its CPU reference under the tolerance
/// |actual - expected| &lt;= abs + rel * |expected|.
/// </summary>
public sealed record Comparison(bool Passed, double MaxErrorFraction, int Mismatches, string Report)
{
    /// <summary>Compares element by element; the report names the first mismatches.</summary>
    public static Comparison Check(string what, ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double abs, double rel, int show = 5)
    {
        if (actual.Length != expected.Length)
            return new Comparison(false, double.PositiveInfinity, -1, $"{what}: length {actual.Length} != reference length {expected.Length}");
        double worst = 0;
        int mismatches = 0;
        var sb = new StringBuilder();
        for (int i = 0; i < actual.Length; i++)
        {
            double tol = abs + rel * Math.Abs(expected[i]);
            double err = Math.Abs(actual[i] - expected[i]);
            // An exact comparison (tol 0) of equal values is 0x tolerance, not 0/0.
            double fraction = double.IsNaN(actual[i]) ? double.PositiveInfinity : err == 0 ? 0 : err / tol;
            worst = Math.Max(worst, fraction);
            if (fraction > 1)
            {
                if (mismatches < show)
                    sb.Append($"\n  [{i}] got {actual[i]:G9}, expected {expected[i]:G9} (error {err:G3}, {fraction:F2}x tolerance)");
                mismatches++;
            }
        }
        string head = $"{what}: {actual.Length} values, max error {worst:F3}x tolerance (abs {abs:G3} + rel {rel:G3})";
        return mismatches == 0
            ? new Comparison(true, worst, 0, head)
            : new Comparison(false, worst, mismatches, $"{head}, {mismatches} mismatches:{sb}");
    }

    /// <inheritdoc cref="Check(string, ReadOnlySpan{float}, ReadOnlySpan{double}, double, double, int)"/>
    public static Comparison Check(string what, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double abs, double rel, int show = 5)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++)
            e[i] = expected[i];
        return Check(what, actual, e, abs, rel, show);
    }
}
