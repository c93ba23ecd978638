using System.Globalization;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// A progress bar with a rate on stderr: on a terminal one line redrawn in place
/// (<c>[######....] 1,024 / 2,048 tokens, 850.3 tok/s</c>); redirected, one such line each time
/// another tenth is done, so a log gets at most eleven lines and no carriage returns.
/// </summary>
public sealed class ProgressBar(CommandIO io, string unit, string rateUnit)
{
    const int Width = 20;
    int lastTenth = -1;
    bool drawn;

    /// <summary>Shows <paramref name="done"/> of <paramref name="total"/> at <paramref name="perSecond"/> units per second.</summary>
    public void Report(long done, long total, double perSecond)
    {
        int filled = total <= 0 ? Width : (int)Math.Clamp(done * Width / total, 0, Width);
        string line = string.Create(CultureInfo.InvariantCulture,
            $"[{new string('#', filled)}{new string('.', Width - filled)}] {done:N0} / {total:N0} {unit}, {perSecond:F1} {rateUnit}");
        if (io.ErrIsTerminal)
        {
            io.Err.Write($"\r{line}");
            drawn = true;
        }
        else
        {
            int tenth = total <= 0 ? 10 : (int)Math.Clamp(done * 10 / total, 0, 10);
            if (tenth == lastTenth)
                return;
            lastTenth = tenth;
            io.Err.WriteLine(line);
        }
        io.Err.Flush();
    }

    /// <summary>Ends the bar's line on a terminal.</summary>
    public void Finish()
    {
        if (drawn)
            io.Err.WriteLine();
        drawn = false;
    }
}
