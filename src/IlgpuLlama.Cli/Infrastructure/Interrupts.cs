using System.Diagnostics;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// Ctrl-C as an interactive command sees it: a count of interrupts, tokens cancelled by the next
/// one, and whether two came within <see cref="DoubleInterval"/> (the user insisting: exit). The
/// console's source (<see cref="FromConsole"/>) turns Ctrl-C into <see cref="Interrupt"/> instead of
/// ending the process; tests create one with <c>new()</c> and call <see cref="Interrupt"/> themselves.
/// </summary>
public sealed class Interrupts : IDisposable
{
    readonly Lock gate = new();
    CancellationTokenSource next = new();
    long last = long.MinValue;
    ConsoleCancelEventHandler? handler;

    /// <summary>Two interrupts at most this far apart ask to exit.</summary>
    public static TimeSpan DoubleInterval { get; } = TimeSpan.FromSeconds(1);

    /// <summary>Interrupts so far.</summary>
    public long Count { get; private set; }

    /// <summary>True once two interrupts came within <see cref="DoubleInterval"/>.</summary>
    public bool ExitRequested { get; private set; }

    /// <summary>A source fed by the console's Ctrl-C (which then no longer ends the process); dispose to restore it.</summary>
    public static Interrupts FromConsole()
    {
        var interrupts = new Interrupts();
        interrupts.handler = (_, e) =>
        {
            e.Cancel = true;
            interrupts.Interrupt();
        };
        Console.CancelKeyPress += interrupts.handler;
        return interrupts;
    }

    /// <summary>What one Ctrl-C does: counts, cancels the tokens handed out, and notes a quick second one.</summary>
    public void Interrupt()
    {
        CancellationTokenSource fired;
        lock (gate)
        {
            long now = Stopwatch.GetTimestamp();
            if (last != long.MinValue && Stopwatch.GetElapsedTime(last, now) <= DoubleInterval)
                ExitRequested = true;
            last = now;
            Count++;
            fired = next;
            next = new CancellationTokenSource();
        }
        // Not disposed: tokens handed out stay readable (a CancellationTokenSource without a timer holds nothing to free).
        fired.Cancel();
    }

    /// <summary>A token that is cancelled once <see cref="Count"/> exceeds <paramref name="seen"/> (already cancelled if it does).</summary>
    public CancellationToken After(long seen)
    {
        lock (gate)
            return Count > seen ? new CancellationToken(canceled: true) : next.Token;
    }

    /// <summary>Gives Ctrl-C back to the console (a source made with <c>new()</c> has nothing to release and keeps working).</summary>
    public void Dispose()
    {
        if (handler is not null)
            Console.CancelKeyPress -= handler;
        handler = null;
    }
}
