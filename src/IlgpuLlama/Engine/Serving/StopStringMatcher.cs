namespace IlgpuLlama.Engine.Serving;

/// <summary>
/// Finds stop strings in a stream of text pieces. Text that could still be the start of a stop
/// string is held back, so a stop string is never partly released: <see cref="Push"/> returns what
/// is certain, and on a match the text before the stop string.
/// </summary>
public sealed class StopStringMatcher
{
    readonly string[] stops;
    string pending = "";

    /// <param name="stops">the stop strings (empty ones are ignored)</param>
    public StopStringMatcher(IEnumerable<string> stops) => this.stops = stops.Where(s => s.Length > 0).Distinct().ToArray();

    /// <summary>Whether a stop string was found.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Adds text; returns the text released by it (before the stop string when one completes).</summary>
    public string Push(string text)
    {
        if (Stopped)
            return "";
        pending += text;
        int cut = -1;
        foreach (string s in stops)
        {
            int i = pending.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (cut < 0 || i < cut))
                cut = i;
        }
        if (cut >= 0)
        {
            Stopped = true;
            string before = pending[..cut];
            pending = "";
            return before;
        }
        int hold = HeldBack();
        string released = pending[..^hold];
        pending = pending[^hold..];
        return released;
    }

    /// <summary>Releases what is held back (the stream ended without completing a stop string).</summary>
    public string Flush()
    {
        string rest = Stopped ? "" : pending;
        pending = "";
        return rest;
    }

    /// <summary>Length of the longest end of the pending text that begins some stop string.</summary>
    int HeldBack()
    {
        int best = 0;
        foreach (string s in stops)
            for (int n = Math.Min(s.Length - 1, pending.Length); n > best; n--)
                if (pending.AsSpan(pending.Length - n).SequenceEqual(s.AsSpan(0, n)))
                {
                    best = n;
                    break;
                }
        return best;
    }
}
